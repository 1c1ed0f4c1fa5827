"""Run every benchmark side by side and write BENCHMARKS.md.

Each ``benchmarks/bench_*.py`` module defines ``run(quick: bool) -> list[Result]``.
A Result compares *our* number with a *reference* measured in the same run, on
the same machine and input, so the ratio is meaningful even on a noisy laptop.

    python benchmarks/run.py            # full sizes, writes BENCHMARKS.md
    python benchmarks/run.py --quick    # tiny sizes, a smoke test (prints only)
    python benchmarks/run.py --only bpe # just bench_bpe.py: its rows replace theirs in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Result  # noqa: E402


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0 or 0.01 <= abs(x) < 1e6:
        return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:.3g}"


def table(results: list[Result]) -> str:
    head = "| benchmark | ours | reference | unit | ratio (higher is better) | target | met |\n"
    head += "|---|---|---|---|---|---|---|\n"
    rows = []
    for r in results:
        met = "—" if r.target is None else ("yes" if r.met else "**no**")
        tgt = "—" if r.target is None else f"≥ {r.target:g}×"
        rows.append(
            f"| {r.name} | {_fmt(r.ours)} | {_fmt(r.reference)} ({r.reference_name}) | {r.unit} | "
            f"{_fmt(r.ratio)}× | {tgt} | {met} |"
        )
    return head + "\n".join(rows) + "\n"


def update_rows(path: Path, results: list[Result], notes: list[str], module: str) -> None:
    """Replace (or add) these rows and their notes in an existing BENCHMARKS.md, keeping every other row.

    Each row's ratio still comes from one run (this one); the rows measured on another day keep theirs.
    The file's header gains a line saying which benchmark was re-run and when.
    """
    text = path.read_text(encoding="utf-8")
    names = {r.name for r in results}
    new_rows = table(results).splitlines()[2:]
    lines, out, in_table = text.splitlines(), [], False
    for line in lines:
        if line.startswith("| benchmark |"):
            in_table = True
        if in_table and line.startswith("| ") and line.split(" | ")[0][2:] in names:
            continue
        if in_table and not line.startswith("|"):
            out.extend(new_rows)
            in_table = False
        if line.startswith("- **") and any(line.startswith(f"- **{n}**") for n in names):
            continue
        out.append(line)
    if in_table:
        out.extend(new_rows)
    if notes and "## Notes" not in text:
        out.extend(["", "## Notes", ""])
    out.extend(notes)
    stamp = f"- bench_{module}.py re-run alone on {dt.date.today()} (`python benchmarks/run.py --only {module}`)"
    at = next(i for i, line in enumerate(out) if line.startswith("- machine:")) + 1
    out.insert(at, stamp)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes; do not write BENCHMARKS.md")
    parser.add_argument("--only", default=None, help="run only bench_<ONLY>.py; its rows replace theirs in BENCHMARKS.md")
    parser.add_argument("--out", default=str(HERE.parent / "BENCHMARKS.md"))
    args = parser.parse_args()

    files = sorted(HERE.glob("bench_*.py"))
    if args.only:
        files = [f for f in files if f.stem == f"bench_{args.only}"]
        if not files:
            parser.error(f"no benchmarks/bench_{args.only}.py")
    results: list[Result] = []
    notes: list[str] = []
    failed = False
    for path in files:
        print(f"== {path.stem}", flush=True)
        t0 = time.perf_counter()
        try:
            out = _load(path).run(quick=args.quick)
        except Exception:
            traceback.print_exc()
            failed = True
            continue
        for r in out:
            print(f"   {r.name}: ours {_fmt(r.ours)} vs {r.reference_name} {_fmt(r.reference)} {r.unit}"
                  f" -> {_fmt(r.ratio)}x" + ("" if r.target is None else f" (target {r.target:g}x: {'met' if r.met else 'NOT met'})"),
                  flush=True)
            if r.note:
                notes.append(f"- **{r.name}**: {r.note}")
        results.extend(out)
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)

    md = table(results)
    print("\n" + md)
    if args.only and not args.quick and results and Path(args.out).exists():
        update_rows(Path(args.out), results, notes, args.only)
        print(f"updated {len(results)} rows of {args.out}")
    if not args.quick and not args.only:
        import torch

        header = (
            "# Benchmarks\n\nWritten by `make bench` (`python benchmarks/run.py`). Every ratio compares two "
            "numbers measured side by side in the same run, on the same machine and input.\n\n"
            f"- date: {dt.date.today()}\n- machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n\n"
        )
        Path(args.out).write_text(header + md + ("\n## Notes\n\n" + "\n".join(notes) + "\n" if notes else ""),
                                  encoding="utf-8")
        print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
