"""Train an Occupancy Network on a dataset in the official ONet layout.

``python -m training.train CONFIG.yaml [--out RUN_DIR] [--data DIR] [--resume | --init MODEL]
[--time-limit S]``

The paper's recipe (see ``training.trainer``) with the settings of CONFIG (see
``training.config``). The run folder (default ``runs/<config name>``) receives::

    config.yaml                        the complete config of the run
    model_best.safetensors (+ .json)   the weights with the best validation IoU so far
    model_last.safetensors (+ .json)   the weights at the last checkpoint
    training_state.pt                  what --resume needs (see training.checkpoints)
    metrics.csv                        rows of iteration, wall_s, metric, value
    tensorboard/                       the same metrics as TensorBoard events
    curves.png                         the metrics plotted, redrawn at each validation

Several processes (``torchrun --nproc_per_node N -m training.train ...``) train with
DistributedDataParallel (NCCL on GPUs, Gloo on CPUs); ``training.batch_size`` is split
between them and only rank 0 writes files. Anything the user can fix ends as one line
``error: ...`` on stderr and exit status 2.
"""

import argparse
import csv
import itertools
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset
from tqdm import tqdm

from backend.io.checkpoints import file_sha256, load_model
from backend.errors import UserError
from backend.models import build_model
from backend.models.onet.encoders import ResNet18Features

from .checkpoints import MODEL_BEST, MODEL_LAST, STATE, load_run, save_model_file, save_state
from .config import learning_rate, load_config
from .data.augment import augment_options
from .data.datasets import ShapeDataset, collate
from .data.fields import run_fields
from .trainer import THRESHOLD, Trainer


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world > 1


def start_processes(device_name):
    """(Processes, device); joins the process group when torchrun started several.

    device_name: "auto" (CUDA when present), "cpu" or "cuda"; with CUDA each process takes
    the GPU of its local rank.
    """
    env = os.environ
    procs = Processes(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                      int(env.get("LOCAL_RANK", 0)))
    if device_name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"training.device is cuda but PyTorch sees no CUDA GPU (torch "
                        f"{torch.__version__}); set it to auto or cpu")
    device = torch.device("cpu")
    if device_name != "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    if procs.distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return procs, device


class EpochSampler(Sampler):
    """``(epoch, index)`` keys of this process's training samples, epoch after epoch without
    end, from batch ``iteration`` on.

    Each epoch is this process's share of a DistributedSampler's shuffled order, cut to
    whole batches, so a resumed run continues mid-epoch with the samples an uninterrupted
    run would see. The epoch travels with each index, so loader workers need no
    ``set_epoch`` and one loader iterator runs across epochs without restarting them.
    """

    def __init__(self, dataset, procs, seed, batch_size, iteration=0):
        self.order = DistributedSampler(dataset, procs.world, procs.rank, shuffle=True,
                                        seed=seed, drop_last=True)
        self.epoch_size = len(self.order) // batch_size * batch_size
        self.start_epoch, step = divmod(iteration, len(self.order) // batch_size)
        self.start = step * batch_size

    def __iter__(self):
        epoch, start = self.start_epoch, self.start
        while True:
            self.order.set_epoch(epoch)
            for index in itertools.islice(iter(self.order), start, self.epoch_size):
                yield epoch, index
            epoch, start = epoch + 1, 0


class RunLog:
    """metrics.csv, TensorBoard events and curves.png of a run (written by rank 0 only).

    Starting at ``iteration`` (0, or the checkpoint a run resumes from) drops what was
    logged in the folder after it.
    """

    FIELDS = ("iteration", "wall_s", "metric", "value")

    def __init__(self, run_dir, iteration):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.csv = self.run_dir / "metrics.csv"
        self.rows = []
        if iteration and self.csv.is_file():
            with open(self.csv, newline="") as f:
                self.rows = [row for row in csv.DictReader(f)
                             if int(row["iteration"]) <= iteration]
        with open(self.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, self.FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
        # Hides events an earlier (interrupted or replaced) run logged after ``iteration``.
        self.writer = SummaryWriter(self.run_dir / "tensorboard", purge_step=iteration + 1)

    def log(self, iteration, wall_seconds, metrics):
        """Append ``{metric: value}`` at ``iteration`` to the CSV and TensorBoard."""
        rows = [{"iteration": iteration, "wall_s": f"{wall_seconds:.1f}", "metric": name,
                 "value": f"{value:.6g}"} for name, value in metrics.items()]
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerows(rows)
        self.rows += rows
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, iteration)
        self.writer.flush()

    def plot(self):
        """Redraw curves.png: one panel per metric against the iteration."""
        from matplotlib.figure import Figure

        names = sorted({row["metric"] for row in self.rows})
        figure = Figure(figsize=(4 * len(names), 3.2), layout="tight")
        for axes, name in zip(figure.subplots(1, len(names), squeeze=False)[0], names):
            points = [(int(row["iteration"]), float(row["value"]))
                      for row in self.rows if row["metric"] == name]
            axes.plot(*zip(*points), marker="o" if name.startswith("val/") else None)
            axes.set_title(name)
            axes.set_xlabel("iteration")
            axes.grid(alpha=0.3)
        temporary = self.run_dir / "curves.tmp.png"
        figure.savefig(temporary, dpi=100)
        os.replace(temporary, self.run_dir / "curves.png")

    def close(self):
        self.writer.close()


def hardware(device, world):
    """What the run trains on, for the model card."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"device": device.type, "cpu": cpu or "unknown",
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu_threads": torch.get_num_threads(), "processes": world,
            "torch": torch.__version__}


def make_card(config, provenance, iteration, wall_seconds, val_iou, best_iou, best_iteration):
    """The model card of a checkpoint at ``iteration`` whose own IoU is ``val_iou`` (None
    when not validated there); ``provenance`` holds the run's fixed facts."""
    data = config["data"]
    card = {
        "threshold": THRESHOLD,
        "input_kind": config["model"]["input_kind"],
        "input_points": data["input_points"] if data["input"] == "pointcloud" else None,
        "metrics": {"val_iou": val_iou, "best_val_iou": best_iou,
                    "best_iteration": best_iteration},
        "provenance": {**provenance, "iterations": iteration,
                       "wall_seconds": round(wall_seconds, 1), "config": config},
    }
    augment = data["augment"]
    if data["input"] == "pointcloud" and augment["points_range"] and \
            augment["sparse_fill"] == "resample":
        # Trained on sparse scans resampled to input_points with fresh noise on every copy:
        # sparse inputs are prepared the same way (backend.engine.pipeline.prepare_points).
        noise = augment["noise_range"]
        card["sparse_inputs"] = {"resample_to": data["input_points"],
                                 "jitter": (noise[0] + noise[1]) / 2 if noise
                                 else data["input_noise"]}
    return card


def train(args, argv):
    """Run the training of ``args`` (parsed command line ``argv``); returns the exit status."""
    if args.time_limit is not None and not args.time_limit >= 0:
        raise UserError(f"--time-limit is seconds >= 0 (got {args.time_limit:g}); 0 stops "
                        "after one iteration")
    config = load_config(args.config, args.data)
    if config["data"]["path"] is None:
        raise UserError(f"{args.config}: no dataset: set data.path or pass --data DIR")
    procs, device = start_processes(config["training"]["device"])
    try:
        return _train(config, args, argv, procs, device)
    finally:
        if procs.distributed:
            dist.destroy_process_group()


def out_of_time(deadline, procs, device):
    """Whether ``deadline`` (a perf_counter time) has passed; with several processes, for
    any of them, so that all stop at the same iteration."""
    late = time.perf_counter() >= deadline
    if not procs.distributed:
        return late
    flag = torch.tensor([float(late)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def is_generative(model_config):
    """Whether the model has a latent encoder q(z | p, occ) (ConvONet configs have no key)."""
    return model_config.get("encoder_latent") is not None


def open_datasets(config):
    """(train, val) ShapeDatasets of the config; UserError for a train split too small for
    the batch."""
    data, opts = config["data"], config["training"]
    latent = is_generative(config["model"])
    select = {"categories": data["categories"], "exclude": data["exclude_categories"],
              "seed": opts["seed"], "normalize_inputs": data["input"] == "pointcloud"}
    rule = bool((config["model"].get("encoder") or {}).get("voxelisation_input"))
    train_set = ShapeDataset(data["path"], "train", run_fields(data, True,
                                                               voxelisation_input=rule),
                             **select, augment=augment_options(data))  # data.augment: train only
    val_set = ShapeDataset(data["path"], "val", run_fields(data, False, latent, rule), **select)
    if len(train_set) < opts["batch_size"]:
        raise UserError(f"the train split has {len(train_set)} shapes, fewer than "
                        f"training.batch_size {opts['batch_size']}; lower it or add shapes")
    return train_set, val_set


def open_model(config, run_dir, resume, init=None):
    """(model, training state or None, origin): the run's last checkpoint with ``resume``,
    else the weights of model file ``init`` (fine-tuning), else a fresh model seeded by
    ``training.seed`` (the same on every process). origin: the card entry of the model a
    fine-tuning run started from (see ``init_provenance``; kept on resume), else None."""
    if resume:
        model, card, state = load_run(run_dir, config["model"])
        return model, state, card["provenance"].get("init")
    if (run_dir / STATE).exists():
        raise UserError(f"{run_dir} already holds a training run; pass --resume to "
                        f"continue it or choose another --out")
    torch.manual_seed(config["training"]["seed"])
    if init is None:
        return build_model(config["model"]), None, None
    trunk = torchvision_resnet18(init)
    if trunk is not None:
        return init_image_trunk(config, init, trunk)
    model, card = load_model(init)
    if model.config != config["model"]:
        raise UserError(f"--init {init}: its model differs from the config's model section; "
                        f"start from a model of this architecture or copy its config (the "
                        f"card's provenance.config.model)")
    return model.train(), None, init_provenance(init, card)


def torchvision_resnet18(path):
    """The trunk tensors (all but ``fc.*``) of a torchvision ResNet-18 weights file (the
    ImageNet ``resnet18-f37072fd.pth``: a bare state dict, ``conv1.weight`` to
    ``fc.bias``), or None when ``path`` is not such a file. Only ``.pth`` files are
    opened here: official ONet checkpoints (``.pt``) go to ``load_model`` unread."""
    if Path(path).suffix != ".pth" or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a bare tensor dict: let load_model say what it is
        return None
    if not isinstance(state, dict) or not {"conv1.weight", "layer4.1.bn2.weight",
                                           "fc.weight"} <= state.keys():
        return None
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def init_image_trunk(config, path, trunk):
    """(model, None, origin): a fresh model of the config whose image encoder's ResNet-18
    trunk starts from ``trunk`` (``torchvision_resnet18``); everything else is random."""
    model = build_model(config["model"])
    features = getattr(model.encoder, "features", None)
    if not isinstance(features, ResNet18Features):
        raise UserError(f"--init {path}: a torchvision ResNet-18 initialises an image "
                        f"encoder (encoder name resnet18), not this config's model")
    try:
        features.load_state_dict(trunk)
    except RuntimeError:
        raise UserError(f"--init {path}: the ImageNet ResNet-18 has torchvision's width 64; "
                        f"set the config's encoder width to 64 (as `paper: image`)") from None
    return model.train(), None, {"file": str(path), "sha256": file_sha256(path),
                                 "weights": "torchvision ResNet-18 (ImageNet): the image "
                                            "encoder's trunk; the rest random"}


def init_provenance(path, card):
    """What a fine-tuning run started from, for its card: the file and, when its card is
    one of ours, how that model was trained."""
    earlier = card.get("provenance", {})
    return {"file": str(path), "sha256": file_sha256(path),
            **{key: earlier[key] for key in ("command", "iterations", "wall_seconds", "data",
                                              "hardware", "init") if key in earlier}}


def single_threaded_worker(worker_id):
    """Loader worker setup: one BLAS thread. The workers already run in parallel, and
    numpy's OpenBLAS may start a thread per core in each of them for the transforms and
    visibility tests of a sample (on a 16-core GPU machine, 14 workers then fed 16 shapes
    per 0.064 s; with one thread each, the step and not the data became the limit)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def make_loaders(train_set, val_set, batch_size, procs, opts, device, iteration):
    """(train loader, val loader) of this process: its share of each epoch's shuffled
    shapes in batches of ``batch_size`` from batch ``iteration`` on (see EpochSampler), and
    every world-th validation shape."""
    sampler = EpochSampler(train_set, procs, opts["seed"], batch_size, iteration)
    options = {"num_workers": opts["num_workers"], "collate_fn": collate,
               "pin_memory": device.type == "cuda",
               "worker_init_fn": single_threaded_worker}
    # A generator of its own keeps the loader from drawing on the global torch RNG.
    train_loader = DataLoader(train_set, batch_size, sampler=sampler, drop_last=True,
                              generator=torch.Generator(), **options)
    val_loader = DataLoader(Subset(val_set, range(procs.rank, len(val_set), procs.world)),
                            1, **options)
    return train_loader, val_loader


def _train(config, args, argv, procs, device):
    data, opts = config["data"], config["training"]
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    max_iterations = opts["max_iterations"]
    latent = is_generative(config["model"])
    if opts["batch_size"] % procs.world:
        raise UserError(f"training.batch_size {opts['batch_size']} must be a multiple of the "
                        f"{procs.world} processes")
    batch_size = opts["batch_size"] // procs.world  # per process
    train_set, val_set = open_datasets(config)
    model, state, origin = open_model(config, run_dir, args.resume, args.init)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts["lr"])
    iteration, best_iou, best_iteration, wall_before = 0, None, None, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        iteration, best_iou = state["iteration"], state["best_iou"]
        best_iteration, wall_before = state["best_iteration"], state["wall_seconds"]
    trainer = Trainer(model, optimizer, device, opts["precision"],
                      config["generative"]["kl_weight"], opts["seed"], procs.rank,
                      procs.distributed)
    train_loader, val_loader = make_loaders(train_set, val_set, batch_size, procs, opts,
                                            device, iteration)

    started = time.perf_counter()
    provenance = {
        "source": "python -m training.train",
        "command": shlex.join(["python", "-m", "training.train", *argv]),
        "data": {"path": str(Path(data["path"]).resolve()),
                 "categories": train_set.categories, "splits": train_set.split_sizes()},
        "hardware": hardware(device, procs.world),
    }
    if origin is not None:
        provenance["init"] = origin

    def wall():
        return wall_before + time.perf_counter() - started

    def card(val_iou):
        return make_card(config, provenance, iteration, wall(), val_iou, best_iou,
                         best_iteration)

    log = None
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        log = RunLog(run_dir, iteration)
    first_iteration = iteration
    deadline = None if args.time_limit is None else started + args.time_limit
    stream = iter(train_loader)
    window = torch.zeros(3, dtype=torch.float64)  # loss sum, KL sum, steps since the last log
    busy = waited = 0.0  # seconds spent stepping, of them waiting for data, since the last log
    progress = tqdm(total=max_iterations, initial=iteration, unit="it", dynamic_ncols=True,
                    disable=not procs.main)
    try:
        last = iteration >= max_iterations
        while not last:
            tick = time.perf_counter()
            for group in optimizer.param_groups:  # the config's schedule, also on --resume
                group["lr"] = learning_rate(opts, iteration)
            batch = next(stream)
            waited += time.perf_counter() - tick
            losses = trainer.train_step(batch, iteration)
            busy += time.perf_counter() - tick
            iteration += 1
            window += torch.tensor([losses["loss"], losses["kl"], 1.0], dtype=torch.float64)
            progress.set_postfix(loss=f"{losses['loss']:.2f}", refresh=False)
            progress.update()
            timed_out = deadline is not None and out_of_time(deadline, procs, device)
            last = iteration == max_iterations or timed_out
            if iteration % opts["log_every"] == 0 or last:
                steps = window[2].item()
                seconds_per_iteration, data_seconds = busy / steps, waited / steps
                if procs.distributed:  # NCCL reduces device tensors only
                    window = window.to(device)
                    dist.all_reduce(window)
                    window = window.cpu()
                metrics = {"train/loss": (window[0] / window[2]).item(),
                           "train/seconds_per_iteration": seconds_per_iteration,
                           "train/data_wait_seconds": data_seconds}
                if latent:
                    metrics["train/kl"] = (window[1] / window[2]).item()
                if log is not None:
                    log.log(iteration, wall(), metrics)
                window.zero_()
                busy = waited = 0.0
            val_iou = None
            if iteration % opts["validate_every"] == 0 or last:
                tick = time.perf_counter()
                val_iou = trainer.validate(val_loader)
                if best_iou is None or val_iou > best_iou:
                    best_iou, best_iteration = val_iou, iteration
                    if procs.main:
                        save_model_file(run_dir / MODEL_BEST, model, card(val_iou))
                if log is not None:
                    log.log(iteration, wall(), {"val/iou": val_iou,
                                                "val/seconds": time.perf_counter() - tick})
                    log.plot()
                progress.write(f"iteration {iteration}: val IoU {val_iou:.4f} "
                               f"(best {best_iou:.4f} at {best_iteration})")
            if (iteration % opts["checkpoint_every"] == 0 or last) and procs.main:
                save_model_file(run_dir / MODEL_LAST, model, card(val_iou))
                save_state(run_dir, optimizer, iteration, best_iou, best_iteration, wall())
    except KeyboardInterrupt:
        print(f"interrupted at iteration {iteration}; --resume continues from the last "
              f"checkpoint in {run_dir}", file=sys.stderr)
        return 130
    finally:
        progress.close()
        if log is not None:
            log.close()
    if procs.main and iteration == first_iteration:
        print(f"the run in {run_dir} is at iteration {iteration} already; raise "
              f"training.max_iterations to train on")
    elif procs.main:
        stopped = (f"stopped at the time limit ({args.time_limit:g} s); --resume continues; "
                   if iteration < max_iterations else "")
        print(f"{stopped}{iteration} iterations in {wall():.0f} s; best val IoU "
              f"{best_iou:.4f} at iteration {best_iteration}; models in {run_dir}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m training.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="training config (YAML)")
    parser.add_argument("--out", type=Path,
                        help="run folder (default: runs/<config name>)")
    parser.add_argument("--data", type=Path, help="dataset folder (replaces data.path)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint (with the "
                            "config's lr schedule)")
    start.add_argument("--init", type=Path, metavar="MODEL",
                       help="start from the weights of MODEL (.safetensors or an official "
                            ".pt of the config's architecture, or torchvision's ImageNet "
                            "resnet18-*.pth for an image encoder of width 64) instead of "
                            "random ones: fine-tuning, with a fresh optimizer and the "
                            "config's schedule")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="stop after this many seconds of this invocation, validating "
                             "and saving as at the last iteration (resumable)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return train(args, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
