"""New Shape: a shape drawn from a generative model's prior by a seed (the backend's
``sample`` source, docs/protocol.md), streamed into a new object at the 3D cursor like a
reconstruction; and the input of such an object, so Set A / Set B blend from its sample."""

from . import jobs, prefs, props
from .connection import BACKEND
from .numeric import InputError
from .scene_input import SceneInput, at_cursor

SEED_PROPERTY = "onet_seed"  # on a sampled object: the seed it was drawn with


def sample_model(settings):
    """The chosen model when it can sample (an unconditional model with a latent code, as
    the backend lists it), else None: the backend's default for sampling."""
    for model in BACKEND.models:
        config = (model.get("card") or {}).get("config") or {}
        if (model["name"] == settings.model_name and model.get("input_kind") is None
                and config.get("z_dim")):
            return model["name"]
    return None


def start_sample(context):
    """Start streaming the shape of ``scene.onet.seed`` into a new object. Returns the
    StreamJob; raises InputError (plain words) when the backend cannot be used."""
    settings = context.scene.onet
    problem = prefs.backend_problem(context)
    if problem:
        raise InputError(problem)
    seed, model = settings.seed, sample_model(settings)
    mise, output = props.mise_of(settings), props.output_of(settings)

    def request(client, on_accepted):
        return client.sample(seed, model=model, mise=mise, output=output,
                             on_accepted=on_accepted)

    job = jobs.StreamJob("reconstruct", prefs.settings_snapshot(context), request,
                         at_cursor(context), f"Sample {seed} ONet", context.scene.name)
    job.properties = {
        "onet_source": f"sample {seed}", "onet_kind": "sample", SEED_PROPERTY: seed,
        "onet_model": model or "default", "onet_resolution0": mise["resolution0"],
        "onet_upsampling_steps": mise["upsampling_steps"],
        "onet_threshold_requested": mise["threshold"] or 0.0,
        "onet_fill_cavities": output["fill_cavities"]}
    return jobs.start(job)


def sample_input(ob):
    """(SceneInput, model name) of an object New Shape made: its seed, drawn again by the
    backend, placed by its current matrix. None for any other object."""
    if ob is None or SEED_PROPERTY not in ob:
        return None
    seed = int(ob[SEED_PROPERTY])
    collection = ob.users_collection[0].name if ob.users_collection else ""
    model = ob.get("onet_model")
    data = SceneInput("sample", {"sample": {"seed": seed}}, ob.name, f"Sample (seed {seed})",
                      ob.matrix_world.copy(), collection)
    return data, (None if model in (None, "default") else str(model))
