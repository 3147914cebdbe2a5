"""The reconstruction engine: a request (``request``) in, mesh frames out (``pipeline``).

``pipeline`` prepares inputs and runs the one reconstruct flow; ``generation`` encodes and
drives MISE (``mise``) over the decoder; ``meshing`` turns lattices into meshes; ``tiling``
covers large scenes; ``inside`` and ``transforms`` are the geometry they share.
"""
