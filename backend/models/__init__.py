"""The networks: ``registry`` (configs -> PyTorch modules: ``build_model``, ``PAPER_CONFIGS``),
``onet``, ``convonet``, ``poco`` (PyTorch), ``numpy_engine`` (the bundled models without
PyTorch), ``analytic`` (closed-form test shapes).

The registry's names are reachable here (``from backend.models import build_model``) and
loaded on first use, so the bundled engine can import ``backend.models.numpy_engine``
where PyTorch is not installed.
"""


import importlib
import importlib.util


def __getattr__(name):
    if name.startswith("__"):  # import machinery probing (__path__ etc.): not the registry's
        raise AttributeError(name)
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(".registry", __name__), name)
