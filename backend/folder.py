"""``python -m backend reconstruct DIR -o OUTDIR``: every input file of a folder, one mesh each.

Inputs are the folder's files with a readable extension (``io.inputs.SUPPORTED_EXTENSIONS``),
in name order; each becomes ``OUTDIR/<stem>.<format>``. A mesh is written under a temporary
name and renamed when complete, so an existing output is a finished one: a second run skips
it (resume after an interruption). A bad file is reported in the table and skipped; the
others go on. Models are loaded once per (model, input kind) and reused.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .errors import UserError

logger = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass
class Outcome:
    """One input's row of the summary table. seconds: wall time of that input (0 if skipped)."""

    input: str
    status: str  # DONE, SKIPPED (its output existed) or FAILED
    output: str
    vertices: Optional[int] = None
    faces: Optional[int] = None
    evaluations: Optional[int] = None
    seconds: float = 0.0
    message: str = ""


def folder_inputs(folder: Path) -> list[Path]:
    """The files of ``folder`` that ``read_input`` reads, sorted by name (not recursive)."""
    from .io.inputs import SUPPORTED_EXTENSIONS

    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)


def output_names(inputs: list[Path], suffix: str) -> dict[Path, str]:
    """``<stem><suffix>`` per input; inputs sharing a stem (a.ply, a.npy) keep their whole
    name (a.ply.ply, a.npy.ply) so no two write the same file."""
    stems = [p.stem for p in inputs]
    return {p: (p.stem if stems.count(p.stem) == 1 else p.name) + suffix for p in inputs}


def prepare_output_folder(path: Path) -> None:
    """Create the output folder, or UserError when it is a file or cannot be created."""
    from .io.meshes import WRITE_EXTENSIONS

    if path.exists() and not path.is_dir():
        raise UserError(f"cannot write into {path}: the input is a folder, so -o must be a "
                        "folder too (it is a file)")
    if not path.exists() and path.suffix.lower() in WRITE_EXTENSIONS:
        raise UserError(f"-o {path} looks like a mesh file, but the input is a folder: give "
                        "an output folder (meshes are named after the inputs; --format "
                        "chooses their type)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {path} ({exc.strerror or exc})") from None


def reconstruct_folder(args, request_from_args, load_model) -> list[Outcome]:
    """Reconstruct every input of the folder ``args.input`` into ``args.output``.

    request_from_args(args, input) and load_model(name, kind, device) are the CLI's own (one
    request per file, built from the same flags as for one file). Prints the summary table
    (or JSON with ``--json``); raises UserError at the end when some input failed.
    """
    from tqdm import tqdm

    from .engine import pipeline
    from .engine.request import LIMITS
    from .io import meshes, zoo
    from .io.inputs import SUPPORTED_EXTENSIONS, read_input

    folder, out = Path(args.input), Path(args.output)
    if args.render:
        raise UserError("--render draws one input: it cannot be used with an input folder")
    inputs = folder_inputs(folder)
    if not inputs:
        raise UserError(f"{folder} holds no input files (supported: "
                        f"{' '.join(SUPPORTED_EXTENSIONS)})")
    prepare_output_folder(out)
    names = output_names(inputs, "." + args.format)
    models: dict[tuple, tuple] = {}
    outcomes = []
    bar = tqdm(inputs, unit="file", file=sys.stderr, disable=args.quiet or args.json)
    for path in bar:
        bar.set_postfix_str(path.name, refresh=False)
        target = out / names[path]
        if target.is_file() and target.stat().st_size > 0:
            outcomes.append(Outcome(path.name, SKIPPED, str(target), message="output exists"))
            continue
        started = time.perf_counter()
        try:
            request = request_from_args(args, read_input(path, voxelisation=args.voxelisation))
        except Exception as exc:
            outcomes.append(failure(path, target, exc, bar))
            continue
        # Outside the try: a bad --model would fail every file. The default can depend on
        # the input's size (zoo.default_model_name), so the key is the resolved name.
        key = (request.model or zoo.default_model_name(request.kind,
                                                       points=request.input_points),
               request.kind)
        if key not in models:
            models[key] = load_model(*key, args.device)
        _, model, card, device = models[key]
        try:
            request.validate(model, LIMITS)
            *_, finished = pipeline.reconstruct(request, model, card, device)
            frame = finished.frame
            partial = target.with_name(f".{target.stem}.partial{target.suffix}")
            meshes.write_mesh(partial, frame.vertices, frame.faces, frame.normals)
            os.replace(partial, target)
        except Exception as exc:
            outcomes.append(failure(path, target, exc, bar))
            continue
        outcomes.append(Outcome(path.name, DONE, str(target), len(frame.vertices),
                                len(frame.faces), frame.evaluations,
                                round(time.perf_counter() - started, 3),
                                "" if len(frame.faces) else "empty surface"))
    bar.close()
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes]))
    else:
        print(table(outcomes))
    failed = [o.input for o in outcomes if o.status == FAILED]
    if failed:
        raise UserError(f"{len(failed)} of {len(outcomes)} inputs failed ({', '.join(failed)});"
                        " fix or remove them and run again: finished outputs are skipped")
    return outcomes


def failure(path: Path, target: Path, exc: Exception, bar) -> Outcome:
    """The row of an input that failed, reported above the progress bar. A UserError is the
    file's fault (its message says so); anything else is logged with its traceback, and
    the run goes on either way: one bad file must not end a dataset run."""
    if isinstance(exc, UserError):
        message = str(exc)
    else:
        logger.error("reconstructing %s failed", path, exc_info=exc)
        message = f"{type(exc).__name__}: {exc}"
    bar.write(f"error: {path.name}: {message}", file=sys.stderr)
    return Outcome(path.name, FAILED, str(target), message=message)


def table(outcomes: list[Outcome]) -> str:
    """The summary: one row per input, then the totals."""
    width = max(len("input"), *(len(o.input) for o in outcomes))
    lines = [f"{'input':<{width}} {'status':<8} {'vertices':>9} {'faces':>9} {'evals':>10}"
             f" {'seconds':>8}  note"]
    for o in outcomes:
        numbers = ("" if o.vertices is None else f"{o.vertices:,}",
                   "" if o.faces is None else f"{o.faces:,}",
                   "" if o.evaluations is None else f"{o.evaluations:,}")
        lines.append(f"{o.input:<{width}} {o.status:<8} {numbers[0]:>9} {numbers[1]:>9}"
                     f" {numbers[2]:>10} {o.seconds:>8.2f}  {o.message}")
    counts = {s: sum(o.status == s for o in outcomes) for s in (DONE, SKIPPED, FAILED)}
    lines.append(f"{len(outcomes)} inputs: {counts[DONE]} done, {counts[SKIPPED]} skipped "
                 f"(finished before), {counts[FAILED]} failed; "
                 f"{sum(o.seconds for o in outcomes):.1f} s")
    return "\n".join(lines)
