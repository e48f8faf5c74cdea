#!/usr/bin/env bash
# Brief fuzzing in CI: builds every cargo-fuzz target, then runs each for FUZZ_SECONDS
# (default 30) starting from its committed seeds and regression reproducers. libFuzzer runs
# every one of those files before it mutates anything, so a reproducer that crashes again fails
# CI, and so does a new crash found in the time given. Called from .ci/run; installs what a fresh
# machine lacks (nightly, cargo-fuzz, a C++ compiler for libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECONDS:-30}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
step() { printf '\n==> %s\n' "$*"; }

step "fuzz: tools"
# libFuzzer needs nightly compiler flags (-Zsanitizer=address, sanitizer coverage).
toolchain=(+nightly)
if ! cargo +nightly --version >/dev/null 2>&1; then
  if ! rustup toolchain install nightly --profile minimal; then
    # No nightly to be had: the stable compiler accepts the same flags with RUSTC_BOOTSTRAP.
    echo "nightly could not be installed; fuzzing with the stable toolchain and RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    toolchain=()
  fi
fi
if ! cargo "${toolchain[@]}" fuzz --version >/dev/null 2>&1; then
  cargo "${toolchain[@]}" install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1; then
  # libfuzzer-sys compiles libFuzzer (C++).
  (apt-get update -qq && apt-get install -y -qq g++) >/dev/null
fi
cargo "${toolchain[@]}" --version
cargo "${toolchain[@]}" fuzz --version

step "fuzz: cargo fmt --check"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "fuzz: Cargo.lock matches the root one"
# fuzz/ is its own workspace: its lock file must not drift (--locked fails if Cargo.toml and
# Cargo.lock disagree), and every package both lock files hold must be at the same versions,
# so the fuzzed crypto and codec crates are the shipped ones.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
lock_pairs() { awk '/^name = /{n=$3} /^version = /{print n, $3}' "$1" | tr -d '"' | sort -u; }
lock_pairs Cargo.lock >"$tmp/root.lock"
lock_pairs fuzz/Cargo.lock >"$tmp/fuzz.lock"
awk 'NR==FNR{r[$1]=1;next} ($1 in r){print $1}' "$tmp/root.lock" "$tmp/fuzz.lock" | sort -u >"$tmp/common"
both() { awk 'NR==FNR{c[$1]=1;next} ($1 in c)' "$tmp/common" "$1"; }
if ! diff <(both "$tmp/root.lock") <(both "$tmp/fuzz.lock"); then
  echo "fuzz/Cargo.lock and Cargo.lock hold different versions of the packages above" >&2
  exit 1
fi
echo "$(wc -l <"$tmp/common") shared packages at the same versions"

step "fuzz: build"
build_start=$SECONDS
cargo "${toolchain[@]}" fuzz build
echo "fuzz build: $((SECONDS - build_start)) s"

corpus_root="$tmp/corpus"
mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi
passed=0
for t in "${targets[@]}"; do
  step "fuzz: $t (${secs} s; seeds and regressions first)"
  # A scratch corpus directory first: libFuzzer writes new inputs there, not into the repo.
  dirs=("$corpus_root/$t")
  mkdir -p "${dirs[0]}"
  for d in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
    [ -d "$d" ] && dirs+=("$d")
  done
  args=(-max_total_time="$secs" -print_final_stats=1)
  # zstd_slice: libFuzzer's malloc limit equals the RSS limit, so one absurd allocation fails.
  [ "$t" = zstd_slice ] && args+=(-rss_limit_mb=512)
  log="$tmp/$t.log"
  if ! cargo "${toolchain[@]}" fuzz run "$t" "${dirs[@]}" -- "${args[@]}" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t failed; the reproducer is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -aE '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec)' "$log" || true
  passed=$((passed + 1))
done

echo
echo "fuzz: ${passed} passed, 0 failed"
