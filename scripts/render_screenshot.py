"""Render docs/screenshot.png: the bundled sample scan and its reconstruction, in Blender.

    .venv/bin/python scripts/render_screenshot.py [-o docs/screenshot.png] [--engine auto]

Runs headless with the bpy module: builds and installs the extension into a temporary user
folder, imports backend/samples/chair_scan.ply as a point cloud object, reconstructs it
with the add-on's own Reconstruct operator (the bundled point-cloud model, MISE 32 -> 256;
the backend is launched with this interpreter) and renders the points (left) next to the result
(right) with Workbench (needs EGL). Workbench aborts the whole process where EGL is missing,
so the render runs in a child process and falls back to Cycles on the CPU.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "backend", "samples", "chair_scan.ply")
ADDON = "bl_ext.user_default.blender_onet"


def read_ply_points(path):
    """x, y, z of a binary little-endian or ASCII PLY's vertices (numpy only)."""
    import numpy as np

    with open(path, "rb") as handle:
        header, properties, count, fmt = [], [], 0, "ascii"
        while True:
            line = handle.readline().decode("ascii").strip()
            header.append(line)
            if line.startswith("format"):
                fmt = line.split()[1]
            elif line.startswith("element vertex"):
                count = int(line.split()[2])
            elif line.startswith("property") and count and len(header) > 2:
                properties.append(line.split())
            elif line == "end_header":
                break
        names = [p[-1] for p in properties]
        if fmt == "binary_little_endian":
            types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4"}
            dtype = np.dtype([(p[-1], types[p[1]]) for p in properties])
            data = np.frombuffer(handle.read(count * dtype.itemsize), dtype)
            return np.stack([data["x"], data["y"], data["z"]], 1).astype(np.float32)
        rows = np.loadtxt(handle, max_rows=count)
        return rows[:, [names.index(k) for k in "xyz"]].astype(np.float32)


def build_scene(work):
    """Reconstruct with the add-on; leave a scene ready to render. Returns nothing."""
    import bpy
    import numpy as np

    zip_path = subprocess.run([sys.executable, os.path.join(ROOT, "scripts",
                                                            "build_extension.py"),
                               "--output-dir", work, "--quiet"], check=True,
                              capture_output=True, text=True)
    zip_path = os.path.join(work, sorted(f for f in os.listdir(work) if f.endswith(".zip"))[0])
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                             enable_on_install=True)
    import importlib

    addon = importlib.import_module(ADDON)
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene

    points = read_ply_points(SAMPLE)
    mesh = bpy.data.meshes.new("Scan")
    mesh.vertices.add(len(points))
    mesh.vertices.foreach_set("co", points.ravel())
    scan = bpy.data.objects.new("Scan", mesh)
    scan.rotation_euler = (np.pi / 2, 0, 0)  # the scan is y-up; the result follows its frame
    scene.collection.objects.link(scan)
    bpy.context.view_layer.objects.active = scan
    scan.select_set(True)

    settings = scene.onet
    settings.model_name, settings.preset = "", "HIGH"  # "": the bundled default
    started = time.monotonic()
    bpy.ops.onet.reconstruct()
    while addon.pump():
        time.sleep(0.02)
    result = bpy.data.objects.get("Scan ONet")
    if result is None:
        sys.exit(f"error: reconstruction failed: {addon.jobs.Status.last_error}")
    print(f"reconstructed in {time.monotonic() - started:.1f} s:"
          f" {len(result.data.polygons):,} faces", file=sys.stderr)

    # Points as small spheres (a mesh of instanced icospheres, built with numpy).
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=1, radius=0.008)
    ico = bpy.context.active_object
    ico_v = np.array([v.co[:] for v in ico.data.vertices], np.float32)
    ico.data.calc_loop_triangles()
    ico_f = np.array([t.vertices[:] for t in ico.data.loop_triangles], np.int32)
    bpy.data.objects.remove(ico)
    dots_v = (points[:, None, :] + ico_v[None]).reshape(-1, 3)
    dots_f = (ico_f[None] + (np.arange(len(points)) * len(ico_v))[:, None, None]).reshape(-1, 3)
    dots = bpy.data.objects.new("Scan points", bpy.data.meshes.new("Scan points"))
    addon.result_mesh.write_mesh(dots.data, dots_v, dots_f)
    dots.matrix_world = scan.matrix_world
    scene.collection.objects.link(dots)
    scan.hide_render = True

    # Side by side: the scan on the left, the reconstruction on the right.
    width = float(points[:, 0].max() - points[:, 0].min())
    dots.location.x -= 0.62 * width
    result.location.x += 0.62 * width
    dots.color = (0.95, 0.45, 0.15, 1.0)
    result.color = (0.55, 0.68, 0.85, 1.0)

    from mathutils import Vector

    bpy.context.view_layer.update()  # matrix_world of the moved objects
    corners = np.array([(ob.matrix_world @ Vector(c))[:] for ob in (dots, result)
                        for c in ob.bound_box])
    centre = (corners.min(0) + corners.max(0)) / 2
    size = float((corners.max(0) - corners.min(0)).max())
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.type = "ORTHO"
    direction = np.array([0.25, -1.0, 0.45])
    direction /= np.linalg.norm(direction)
    # Fit both objects' projected extents: ortho_scale spans the image width (1200 x 560).
    right = np.cross(-direction, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, -direction)
    extent_right = np.ptp(corners @ right)
    extent_up = np.ptp(corners @ up)
    camera.data.ortho_scale = 1.08 * max(extent_right, extent_up * 1200 / 560)
    camera.location = centre + direction * size * 3
    camera.rotation_euler = (Vector(centre) - camera.location).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(camera)
    scene.camera = camera
    world = bpy.data.worlds.new("World")
    world.color = (0.92, 0.92, 0.93)
    scene.world = world
    scene.render.resolution_x, scene.render.resolution_y = 1200, 560
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode, scene.render.image_settings.compression = "RGB", 100
    scene.view_settings.view_transform = "Standard"  # the colours as given
    addon.jobs.backend.stop()


def render(output, engine):
    import bpy

    scene = bpy.context.scene
    if engine == "workbench":
        scene.render.engine = "BLENDER_WORKBENCH"
        shading = scene.display.shading
        shading.light, shading.color_type = "STUDIO", "OBJECT"
        shading.show_cavity, shading.show_shadows = True, True
        scene.display.render_aa = "8"
    else:
        scene.render.engine = "CYCLES"
        scene.cycles.device, scene.cycles.samples = "CPU", 32
        for ob in scene.objects:
            if ob.type == "MESH":
                material = bpy.data.materials.new(ob.name)
                material.diffuse_color = ob.color
                material.use_nodes = True
                material.node_tree.nodes["Principled BSDF"].inputs[0].default_value = ob.color
                ob.data.materials.append(material)
        sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
        sun.rotation_euler = (0.7, 0.2, 0.6)
        scene.collection.objects.link(sun)
        scene.world.use_nodes = True
        scene.world.node_tree.nodes["Background"].inputs[0].default_value = (0.9, 0.9, 0.92, 1)
    scene.render.filepath = output
    bpy.ops.render.render(write_still=True)


def child(output, engine):
    work = tempfile.mkdtemp(prefix="onet-shot-")
    os.environ["BLENDER_USER_RESOURCES"] = work  # before bpy is imported
    os.environ.setdefault("ONET_BACKEND_PYTHON", sys.executable)
    build_scene(os.path.join(work, "dist"))
    render(output, engine)
    print(f"wrote {output} ({engine})", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "screenshot.png"))
    parser.add_argument("--engine", choices=("auto", "workbench", "cycles"), default="auto")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    output = os.path.abspath(args.output)
    if args.child:
        return child(output, args.engine)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    for engine in (["workbench", "cycles"] if args.engine == "auto" else [args.engine]):
        result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                 "--engine", engine, "-o", output])
        if result.returncode == 0:
            return 0
        print(f"{engine} render failed (exit status {result.returncode})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
