"""Side-by-side table of evaluation reports: ``python -m training.compare LABEL=REPORT_DIR ...``.

Each ``training.evaluate`` report holds one or more methods (the model, and baselines such as
screened Poisson); this prints one Markdown row per (report, method) with the mean of class
means over ``--categories`` (default: every class of the report), so that models evaluated
apart, on the same split and inputs, compare in one table. ``--split-by a,b`` prints two
tables: the classes named (for example the categories held out of training) and the rest.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from backend.errors import UserError, run_command

from .evaluate import TABLE


def read_summary(report: Path) -> dict:
    """A report folder's summary.json; UserError naming the folder otherwise."""
    try:
        return json.loads((report / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{report}: no readable summary.json ({exc}); give folders written "
                        f"by python -m training.evaluate") from None


def class_mean(result: dict, categories) -> tuple[int, dict]:
    """(shapes, {metric: mean over the chosen classes' means}) of one method's result."""
    chosen = {name: c for name, c in result["classes"].items()
              if categories is None or name in categories}
    if not chosen:
        raise UserError(f"none of the classes {', '.join(sorted(categories))} is in the "
                        f"report (it has {', '.join(result['classes'])})")
    keys = {key for key, _, _ in TABLE} | {"seconds"}
    means = {key: float(np.mean([c[key] for c in chosen.values()])) for key in keys}
    return sum(c["shapes"] for c in chosen.values()), means


def table(reports: list[tuple[str, dict]], categories=None) -> str:
    """Markdown: one row per report and method."""
    lines = ["| report | method | shapes | " + " | ".join(t for _, t, _ in TABLE)
             + " | s / shape |", "|---|---|---:|" + "---:|" * (len(TABLE) + 1)]
    for label, summary in reports:
        for method, result in summary["methods"].items():
            shapes, means = class_mean(result, categories)
            cells = [f"{means[key] * factor:.4f}" for key, _, factor in TABLE]
            lines.append(f"| {label} | {method} | {shapes} | " + " | ".join(cells)
                         + f" | {means['seconds']:.2f} |")
    return "\n".join(lines)


def compare(args: argparse.Namespace) -> None:
    reports = []
    for item in args.reports:
        label, sep, folder = item.partition("=")
        if not sep:
            label, folder = Path(item).name, item
        reports.append((label, read_summary(Path(folder))))
    if args.split_by:
        chosen = {name.strip() for name in args.split_by.split(",") if name.strip()}
        rest = set().union(*(set(r["classes"]) for _, s in reports
                             for r in s["methods"].values())) - chosen
        print(f"Classes {', '.join(sorted(chosen))} (mean of class means):\n")
        print(table(reports, chosen))
        print(f"\nClasses {', '.join(sorted(rest))} (mean of class means):\n")
        print(table(reports, rest))
    else:
        print(table(reports))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", metavar="LABEL=REPORT_DIR",
                        help="evaluation report folders, each optionally labelled")
    parser.add_argument("--split-by", metavar="A,B",
                        help="two tables: these classes (e.g. held out of training), the rest")
    return run_command(compare, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
