#!/usr/bin/env bash
# Proves that otapack-core builds and links without std.
#
# 1. Links crates/nostd-check, a #![no_std] #![no_main] x86_64 Linux program that uses
#    otapack-core with features rsa and zstd, with -nostartfiles -nostdlib -static, and requires
#    the executable to be self-contained: a dependency that pulls in std or libc makes this step
#    fail (see below for how). Then runs it: it must fully verify a real package (Ed25519 + RSA
#    signatures, zstd slices) and refuse corrupted copies, then stream the package through the
#    device applier onto a RAM-backed NOR flash, get the image's SHA-256 back from flash, and
#    see a copy with a flipped payload byte refused (exit status 0). It also measures, by stack
#    painting, the peak stack use of verification and of the applier run (each twice, within
#    one process: the two must agree) and prints it; this needs RLIMIT_STACK of at least about
#    1 MiB (ulimit -s; the default is 8 MiB). The figures are for x86_64, where curve25519-dalek
#    picks its AVX2 backend at run time: they are not the figures of a Cortex-M build.
# 2. Builds otapack-core for thumbv7em-none-eabihf, a target that has no std at all, with
#    features rsa,zstd and with none, and links the bare-metal size probes
#    (crates/nostd-check/src/bin/size-probe*.rs) to print, one line each, the .text cost of
#    (a) verification (Ed25519 + RSA + zstd), (b) the applier with Ed25519 + zstd (no RSA: the
#    realistic bootloader set) and (c) the applier with Ed25519 + RSA + zstd.
#    Skipped with a notice if the target cannot be installed.
#
# Everything is built into crates/nostd-check/target (gitignored), away from the root target/.
# Needs an x86_64 Linux host with cc and binutils (readelf, nm, size).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
crate=crates/nostd-check
target_dir=$crate/target
thumb=thumbv7em-none-eabihf
started=$SECONDS

# Size in bytes of section $2 of ELF file $1 ("?" without binutils' size).
section_size() {
    local n=""
    if command -v size >/dev/null; then
        n=$(size -A "$1" | awk -v s="$2" '$1 == s { print $2 }')
    fi
    echo "${n:-?}"
}

if [[ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]]; then
    echo "nostd-check: needs an x86_64 Linux host (this is $(uname -s)/$(uname -m))" >&2
    exit 1
fi

echo "== nostd-check: link otapack-core (rsa, zstd) into a static executable without std or libc"
cargo rustc --release --manifest-path "$crate/Cargo.toml" --target-dir "$target_dir" \
    --bin nostd-check -- \
    -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static \
    -C relocation-model=static
bin=$target_dir/release/nostd-check

# The link alone is not enough: for crates that declare native libraries (std, or the libc
# crate) rustc itself adds `-Wl,-Bdynamic -lgcc_s -lc ...`, which -nostdlib and -static do not
# remove, and the link "succeeds" with a dynamic section and no interpreter (it crashes when
# run). (std proper is normally stopped earlier: with our #[panic_handler] it is error E0152,
# duplicate lang item `panic_impl`.) So require a self-contained executable.
echo "== nostd-check: $bin must need no shared library and have no undefined symbol"
needed=$(readelf -d "$bin" | grep '(NEEDED)' || true)
undefined=$(nm -u "$bin")
if [[ -n $needed || -n $undefined ]]; then
    echo "nostd-check: FAILED: $bin is not self-contained: something links a native library" \
        "(std or libc?)" >&2
    [[ -z $needed ]] || echo "$needed" >&2
    [[ -z $undefined ]] || echo "undefined symbols:" $undefined >&2
    exit 1
fi

echo "== nostd-check: run $bin"
status=0
"$bin" || status=$?
if [[ $status -ne 0 ]]; then
    echo "nostd-check: FAILED: $bin exited with status $status" \
        "(the codes are enum Fail in $crate/src/main.rs)" >&2
    exit 1
fi
echo "nostd-check: passed; x86_64 executable $(stat -c %s "$bin") bytes:" \
    ".text $(section_size "$bin" .text), .rodata $(section_size "$bin" .rodata) (package included)"

echo "== otapack-core for $thumb (no std on this target)"
if ! command -v rustup >/dev/null; then
    echo "NOTICE: rustup not found: skipping the $thumb builds"
elif ! rustup target add "$thumb"; then
    echo "NOTICE: could not add target $thumb: skipping the $thumb builds"
else
    cargo build -p otapack-core --target "$thumb" --target-dir "$target_dir" --release \
        --features rsa,zstd
    cargo build -p otapack-core --target "$thumb" --target-dir "$target_dir" --release \
        --no-default-features
    echo "nostd-check: otapack-core builds for $thumb with features rsa,zstd and with none"

    # (a) and (c) with the crate's default features (rsa), then (b) without: the same binary
    # path, so each is measured right after its build.
    probe_dir=$target_dir/$thumb/release
    cargo build --release --manifest-path "$crate/Cargo.toml" --target-dir "$target_dir" \
        --target "$thumb" --bin size-probe --bin size-probe-apply
    text_a=$(section_size "$probe_dir/size-probe" .text)
    text_c=$(section_size "$probe_dir/size-probe-apply" .text)
    cargo build --release --manifest-path "$crate/Cargo.toml" --target-dir "$target_dir" \
        --target "$thumb" --bin size-probe-apply --no-default-features
    text_b=$(section_size "$probe_dir/size-probe-apply" .text)
    echo "nostd-check: $thumb .text (a) verify only (parse + keys + verify_package; Ed25519 + RSA + zstd): $text_a bytes"
    echo "nostd-check: $thumb .text (b) applier, Ed25519 + zstd (no RSA; keys + Applier onto NorFlash): $text_b bytes"
    echo "nostd-check: $thumb .text (c) applier, Ed25519 + RSA + zstd (keys + Applier onto NorFlash): $text_c bytes"
fi

echo "nostd-check: all passed in $((SECONDS - started)) s"
