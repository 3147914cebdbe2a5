"""Files in and out: user inputs (``inputs``, ``binvox``), meshes (``meshes``), model files
(``checkpoints``, ``zoo``) and pictures (``render``)."""
