"""Build the Blender extension zip: dist/blender_onet-<version>.zip.

    python scripts/build_extension.py [--output-dir dist] [--blender-ext PATH]

The zip holds blender_manifest.toml, LICENSE (GPL-3.0, the manifest's licence) and the
files of blender_onet/ at its root, and the backend package as backend/ (weights, samples
and a requirements.txt with the backend's runtime pins; no __pycache__). Blender's own extension tool (blender_ext.py, shipped in the
bpy wheel; plain Python, no Blender binary) builds the zip and validates it. Needs only the
standard library and an installed bpy (or --blender-ext / $BLENDER_EXT).
"""

import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The backend's runtime requirements (pyproject's [project] dependencies); the rest of
# requirements.txt (training, tests, bpy) is not needed to run the backend.
RUNTIME = ("torch", "numpy", "PyMCubes", "trimesh", "scipy", "safetensors", "pillow",
           "fast-simplification")


def find_blender_ext(given=None):
    """Path of blender_ext.py from the installed bpy wheel (or as given)."""
    given = given or os.environ.get("BLENDER_EXT")
    if given:
        return given
    candidates = []
    spec = importlib.util.find_spec("bpy")
    if spec is not None and spec.submodule_search_locations:
        candidates += list(spec.submodule_search_locations)
    candidates += glob.glob(os.path.join(ROOT, ".venv", "lib", "python3*", "site-packages",
                                         "bpy"))
    for folder in candidates:
        found = sorted(glob.glob(os.path.join(folder, "*", "scripts", "addons_core", "bl_pkg",
                                              "cli", "blender_ext.py")))
        if found:
            return found[-1]
    sys.exit("error: cannot find Blender's blender_ext.py: install bpy (pip install bpy) or"
             " pass --blender-ext PATH")


def runtime_requirements(path):
    """The runtime pins of requirements.txt, one per line."""
    names = {re.sub(r"[-_.]+", "-", name).lower() for name in RUNTIME}
    lines = ["# Runtime requirements of the ONet Reconstruct backend (from requirements.txt).",
             "# The add-on's \"Install backend environment\" button installs these; torch's",
             "# +cpu build comes from https://download.pytorch.org/whl/cpu"]
    with open(path) as handle:
        for raw in handle:
            line = raw.split("#", 1)[0].strip()
            name = re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0]
            if line and re.sub(r"[-_.]+", "-", name).lower() in names:
                lines.append(line)
    return "\n".join(lines) + "\n"


def stage(folder):
    """Lay out the extension's files in ``folder``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    shutil.copy2(os.path.join(ROOT, "blender_manifest.toml"), folder)
    shutil.copy2(os.path.join(ROOT, "LICENSE"), folder)
    source = os.path.join(ROOT, "blender_onet")
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if name in ("__pycache__", "backend") or name.startswith("."):
            continue
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(folder, name), ignore=ignore)
        elif not name.endswith(".pyc"):
            shutil.copy2(path, folder)
    backend = os.path.join(folder, "backend")
    shutil.copytree(os.path.join(ROOT, "backend"), backend, ignore=ignore)
    with open(os.path.join(backend, "requirements.txt"), "w") as handle:
        handle.write(runtime_requirements(os.path.join(ROOT, "requirements.txt")))
    for sub in ("weights", "samples"):
        os.makedirs(os.path.join(backend, sub), exist_ok=True)
        if not os.listdir(os.path.join(backend, sub)):  # keep the folder in the zip
            with open(os.path.join(backend, sub, "README.txt"), "w") as handle:
                handle.write("Bundled model weights (.safetensors + .json cards) go here.\n")


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command[1:3])} failed:\n{output}")
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--blender-ext", help="path of Blender's blender_ext.py")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    with open(os.path.join(ROOT, "blender_manifest.toml"), "rb") as handle:
        manifest = tomllib.load(handle)
    tool = find_blender_ext(args.blender_ext)
    os.makedirs(args.output_dir, exist_ok=True)
    output = os.path.join(args.output_dir, f"{manifest['id']}-{manifest['version']}.zip")
    if os.path.exists(output):
        os.remove(output)
    with tempfile.TemporaryDirectory(prefix="onet-ext-") as folder:
        stage(folder)
        run([sys.executable, tool, "validate", folder])
        run([sys.executable, tool, "build", "--source-dir", folder, "--output-filepath",
             output])
    report = run([sys.executable, tool, "validate", output])
    if not args.quiet:
        print(report)
        print(output)
    return output


if __name__ == "__main__":
    main()
