"""HDiffPatch for benches/compare/run.sh, through the hdiffpatch package (PyPI), which wraps the
HDiffPatch C++ library: lzma2 at level 9 with a 4 MiB dictionary, the settings of the issue's
reference figures.

    python hdiff.py diff OLD NEW PATCH
    python hdiff.py apply OLD PATCH OUT

Prints the library call's own time (without Python start-up) to stderr.
"""

import sys
import time

import hdiffpatch


def main() -> None:
    op, a, b, c = sys.argv[1:5]
    old = open(a, "rb").read()
    t = time.perf_counter()
    if op == "diff":
        new = open(b, "rb").read()
        config = hdiffpatch.Lzma2Config(level=9, window=22, threads=1)
        out = hdiffpatch.diff(old, new, compression=config, validate=False)
    elif op == "apply":
        out = hdiffpatch.apply(old, open(b, "rb").read())
    else:
        sys.exit(f"unknown operation {op!r}")
    print(f"hdiffpatch {op}: {time.perf_counter() - t:.3f} s in the library", file=sys.stderr)
    open(c, "wb").write(out)


if __name__ == "__main__":
    main()
