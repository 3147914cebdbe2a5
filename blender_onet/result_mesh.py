"""Result objects: one Mesh datablock per job, refilled in place at every MISE level."""

import bpy
import numpy as np


def write_mesh(mesh, vertices, faces):
    """Replace ``mesh``'s geometry with triangles (fast path: attributes + foreach_set).

    ``clear_geometry`` keeps the datablock, its materials and the objects using it.
    """
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    mesh.clear_geometry()
    mesh.vertices.add(len(vertices))
    position = mesh.attributes.get("position")
    if position is not None and position.data_type == "FLOAT_VECTOR":
        position.data.foreach_set("vector", vertices.ravel())
    else:
        mesh.vertices.foreach_set("co", vertices.ravel())
    mesh.loops.add(faces.size)
    corner_vert = mesh.attributes.get(".corner_vert")
    if corner_vert is not None:
        corner_vert.data.foreach_set("value", faces.ravel())
    else:
        mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    if len(faces):
        if hasattr(mesh, "shade_smooth"):
            mesh.shade_smooth()
        else:
            mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))


def create_object(name, matrix, collection_name, context_scene):
    """A new mesh object ``name`` (Blender may add .001) linked next to its source."""
    mesh = bpy.data.meshes.new(name)
    ob = bpy.data.objects.new(name, mesh)
    ob.matrix_world = matrix
    collection = bpy.data.collections.get(collection_name) if collection_name else None
    if collection is None or collection not in context_scene.collection.children_recursive:
        collection = context_scene.collection
    collection.objects.link(ob)
    return ob


def remove_object(name):
    """Delete an object we created and its mesh (if nothing else uses the mesh)."""
    ob = bpy.data.objects.get(name)
    if ob is None:
        return
    mesh = ob.data if ob.type == "MESH" else None
    bpy.data.objects.remove(ob)
    if mesh is not None and mesh.users == 0:
        bpy.data.meshes.remove(mesh)


def remove_orphan_mesh(name, key, uid):
    """Delete the mesh ``name`` a job made when it is left without users (its object was
    deleted mid-job) and still carries the job's ``key`` = ``uid``; else leave it."""
    mesh = bpy.data.meshes.get(name) if name else None
    if mesh is not None and mesh.users == 0 and mesh.get(key) == uid:
        bpy.data.meshes.remove(mesh)


def copy_object(name, new_name, context_scene):
    """A full copy (own mesh) of object ``name``, linked in the same collections."""
    ob = bpy.data.objects.get(name)
    copy = ob.copy()
    copy.data = ob.data.copy()
    copy.name = new_name
    copy.data.name = new_name
    collections = ob.users_collection or (context_scene.collection,)
    for collection in collections:
        collection.objects.link(copy)
    return copy
