"""Stand-in for ``python -m arca <step>`` in workflow tests: writes each step's declared outputs.

tests/test_workflow.py puts a ``python`` shim on PATH that runs this file, so Snakemake executes
the real Snakefile end to end in seconds without training anything. The outputs come from
``arca.paths`` fed with the config the step was given, so the test also checks that the arguments
each rule passes resolve to the config Snakemake planned with. Every call is appended to the file
named by ``FAKE_ARCA_CALLS`` as ``<step> <run>``, a training run's line followed by the run hash of
the config it was given.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib
from pathlib import Path

from arca.config import load_config, run_hash
from arca.paths import paths_of


def _png() -> bytes:
    """A valid 1x1 white PNG: the report embeds figures and should get a real image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\xff\xff")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _write(path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".png":
        p.write_bytes(_png())
    elif p.suffix == ".csv":
        p.write_text("method,value\nuniform,0\n")
    else:
        p.write_text("fake\n")


def _write_dir(path: str | Path) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    Path(path, "fake.txt").write_text("fake\n")


def _declared(out: str, expected: Path) -> str:
    """The ``--out`` a rule passed: the real step writes there, so it must be the path arca.paths names."""
    if out != str(expected):
        raise SystemExit(f"fake python: --out {out!r} is not the declared output {expected!r}")
    return out


def main(argv: list[str]) -> int:
    if argv[:2] != ["-m", "arca"]:
        raise SystemExit(f"fake python: unexpected arguments {argv}")
    parser = argparse.ArgumentParser()
    parser.add_argument("step")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--run", nargs="+", default=[""])
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv[2:])
    cfg = load_config(args.config, args.overrides)
    p = paths_of(cfg)
    step, run = args.step, " ".join(args.run)  # evaluate takes every seed of a cell
    note = ""
    if step == "prepare-data":
        files, dirs = list(p.data.declared().values()), []
    elif step == "build-base":
        files, dirs = [], [p.base]
    elif step == "train":
        note = f" {run_hash(cfg, run)}"  # also fails on an unknown run id, as the real step would
        out = p.run(run)
        files, dirs = [out.metrics, out.final_weights, out.curve], [out.adapter]
        # Undeclared siblings, as the real step writes them.
        dirs.append(out.checkpoints)
    elif step == "evaluate":
        files, dirs = [f for r in args.run for f in p.eval(r).declared().values()], []
    elif step == "probe-rollouts":
        files, dirs = [_declared(args.out, p.probe_rollouts)], []
    elif step == "curve-start":
        files, dirs = [_declared(args.out, p.curve_start)], []
    elif step == "mc-values":
        files, dirs = [_declared(args.out, p.mc_values), p.mc_summary], []
    elif step == "aggregate":
        files, dirs = list(p.table_files().values()), []
    elif step == "figures":
        files, dirs = list(p.figure_files().values()), []
    elif step == "heatmap-rollouts":
        files, dirs = [_declared(args.out, p.heatmap_rollouts)], []
    elif step == "heatmap":
        files, dirs = [p.heatmap], []
    elif step == "bench":
        files, dirs = [p.bench_summary("json"), p.bench_summary("md")], []
    else:
        raise SystemExit(f"fake python: unknown step {step}")
    for d in dirs:
        _write_dir(d)
    for f in files:
        _write(f)
    with open(os.environ["FAKE_ARCA_CALLS"], "a", encoding="utf-8") as log:
        log.write(f"{step} {run}{note}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
