"""Training throughput, side by side in one run: images/s (classification) and windows/s (stereo) per
execution mode (``--exec``), precision and thread count, with peak memory and what the same batches
trained to.

- classification: a hand-written 242k-parameter genotype (a 48-channel stem and four cells of the SpikeDHS
  feature cell at 16x16 and 8x8), T = 4, batch 64, on scikit-learn's digits upsampled to 16x16; the test
  accuracy after the fixed batches;
- stereo: genotypes/stereo_small.yaml on 48x64 crops, 2 burn-in + 4 windows per sample, batch 4, on
  synthetic recordings; the training loss of the last batches;
- stereo-fine (not in the default tasks): the same for the shipped model's genotype,
  genotypes/stereo_small_fine.yaml, at its full 96x128 input, four times the pixels of a 48x64 crop.

Every configuration runs in its own process (``--child``), so that its peak resident memory
(``resource.getrusage``) is its own: ``MB/sample`` is (peak - resident before the first batch) / batch.
Each trains ``--warmup`` untimed batches (the fused kernel loads, the allocator warms), then ``--batches``
timed ones (median time per batch, wall clock and this process's CPU time: on a shared machine the CPU-time
rate of a one-thread configuration is the steadier number, the wall-clock one the only one for two threads);
the weights, data order and seeds are the same in every configuration. ``eager`` rows run in the plain memory
order unless a layout is given: they are the reference, what training was before issue 20, and ``x eager``
is measured against the first eager row of one thread. Every configuration runs with malloc as training
runs it (``$SNN_MALLOC``, ``training.allocator``: freed memory kept by default); the first line says which, and
each JSON row has it (``malloc``).

    python benchmarks/bench_train.py                  # short defaults, about 3 minutes on 2 cores
    python benchmarks/bench_train.py --full           # more batches, and accuracy worth reading
    python benchmarks/bench_train.py --tasks class --configs eager:fp32:1,multistep:bf16:1
    python benchmarks/bench_train.py --tasks class --configs eager:fp32:1,multistep:bf16:1 --interleave 6

``--interleave ROUNDS`` runs a task's configurations in one process instead, alternating them ROUNDS times
(forward, then backward), ``--batches`` timed batches each per round: on a host whose speed drifts during the
run (a shared machine) the ratios between configurations then share the drift, which separate processes one
after the other do not; memory is not measured there, and configurations under torchrun are refused.

The 1-minute load average is printed beside every row: the machine may be shared, and two threads beside
a busy neighbour run slower than one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.core.errors import ArgumentParser, first_line, int_between  # noqa: E402
from training.options import OPTION_RANGES  # noqa: E402  (training.train's bounds: the children apply them)

MAX_PROCS = 64  # processes under torchrun on one machine

CLASS_GENOTYPE = """schema: 1
name: bench-cla
task: classification
input: {height: 16, width: 16, encoding: image, channels: 1, timesteps: 4}
neuron: {kind: lif, tau: 0.2, threshold: 0.5, reset: hard, surrogate: {kind: dspike, b: 3}}
mixing: spike
cells:
  cell:
    nodes:
      n0: {inputs: [{from: c_prev, op: conv3x3}, {from: c_prev_prev, op: conv3x3}]}
      n1: {inputs: [{from: c_prev, op: conv3x3, b: 5}, {from: c_prev_prev, op: conv3x3}]}
      n2: {inputs: [{from: n0, op: conv3x3}, {from: n1, op: conv3x3}]}
networks:
  backbone:
    dims: 2
    rates: [1, 2]
    node_channels: [16, 32]
    layers:
      - {conv: conv3x3, channels: 48, name: stem}
      - {cell: cell, level: 0}
      - {cell: cell, level: 0}
      - {cell: cell, level: 1}
      - {cell: cell, level: 1}
head:
  backbone: backbone
  classes: 10
"""
STEREO_TASKS = {"stereo": ("stereo_small", (48, 64)), "stereo-fine": ("stereo_small_fine", (96, 128))}
TASKS = ("class", *STEREO_TASKS)
# bf16 at one thread in both orders (auto picks one of them by the CPU kind: training.execution.resolve_layout)
DEFAULT_CONFIGS = "eager:fp32:1,step:fp32:1,multistep:fp32:1,multistep:bf16:1:channels-last,multistep:bf16:1:nchw," \
                  "eager:fp32:2,multistep:fp32:2,multistep:bf16:2,multistep:fp32:1x2,multistep:bf16:1x2"


def cpu_flags() -> str:
    from training.execution import cpuinfo_text

    text = cpuinfo_text()
    if not text:
        return "unknown"
    flags = sorted({w for w in text.split() if w.startswith("amx") or w == "avx512_bf16"})
    return " ".join(flags) or "none of amx*, avx512_bf16"


def _class_setup(cfg_kw: dict, data_path: str | None = None):
    import torch
    import torch.nn.functional as F

    from compiler import build_model, loads_genotype
    from training.config import TrainConfig, task_defaults
    from training.images import ClassData, digits

    g = loads_genotype(CLASS_GENOTYPE, file="bench-cla.yaml")
    train, test = digits()
    up = [ClassData(F.interpolate(d.x, size=(16, 16), mode="bilinear", align_corners=False), d.y, d.classes, d.name)
          for d in (train, test)]
    cfg = task_defaults(TrainConfig(genotype="bench", out="", quiet=True, tensorboard=False, **cfg_kw), g)
    torch.manual_seed(cfg_kw["seed"])
    return g, cfg, build_model(g), up[0], up[1]


def _stereo_genotype(task: str):
    from compiler import load_genotype

    name, (h, w) = STEREO_TASKS[task]
    return load_genotype(ROOT / "genotypes" / f"{name}.yaml", overrides={"input.height": h, "input.width": w})


def stereo_data(path: Path, task: str = "stereo") -> None:
    """The synthetic recordings every configuration of a stereo task trains on, generated once, saved to ``path``."""
    import torch

    from training.data import SyntheticSpec, synthetic_stereo

    g = _stereo_genotype(task)
    _, (h, w) = STEREO_TASKS[task]
    data = synthetic_stereo(SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=1.2, val_seconds=0.4),
                            height=h, width=w, encoding=g.input.encoding, bins=g.input.bins,
                            window_us=int(g.input.window_ms * 1000), length=6, stride=2, burn_in=2)
    torch.save(data, path)


def _stereo_setup(cfg_kw: dict, data_path: str, task: str = "stereo"):
    import torch

    from compiler import build_model
    from training.config import TrainConfig, task_defaults

    g = _stereo_genotype(task)
    cfg = task_defaults(TrainConfig(genotype=STEREO_TASKS[task][0], out="", quiet=True, tensorboard=False, windows=4,
                                    burn_in=2, **cfg_kw), g)
    data = torch.load(data_path, weights_only=False)
    torch.manual_seed(cfg_kw["seed"])
    return g, cfg, build_model(g), data, None


def _trainer(spec: dict):
    """One configuration's trainer, model, test set and its warmup + timed batches (the same in every
    configuration: weights, data order and seeds come from ``spec["seed"]``)."""
    import torch

    from training.distributed import broadcast_module, convert_batchnorm, setup
    from training.loop import Trainer

    torch.set_num_threads(spec["threads"])
    kw = {"exec": spec["exec"], "precision": spec["precision"], "threads": spec["threads"], "seed": spec.get("seed", 0),
          "layout": spec.get("layout", "auto")}
    if spec["task"] == "class":
        g, cfg, model, train, test = _class_setup(kw)
    else:
        g, cfg, model, train, test = _stereo_setup(kw, spec["data"], spec["task"])
    dist = setup()  # under torchrun: this process's rank; the batch is the global one, each takes its slice
    if dist.enabled:
        convert_batchnorm(model)
        broadcast_module(model, dist)
    trainer = Trainer(cfg, g, model, train, test, dist, log=lambda s: None)
    need = spec["warmup"] + spec["batches"]
    batches = []
    epoch = 0
    while len(batches) < need:
        idx, gen, rng = trainer.batches(epoch)
        batches += [trainer.make_batch(i, gen, rng) for i in idx]
        epoch += 1
    return trainer, cfg, model, test, dist, batches[:need]


def _row(spec: dict, trainer, cfg, model, test, times: list[float], cpu: list[float], losses: list[float],
         memory: tuple[float, float] | None) -> dict:
    """A configuration's result row; ``memory`` (peak MB, MB a sample) is None where it was not measured."""
    import numpy as np
    import torch

    from compiler import stepnorm
    from training.execution import neuron_impl
    from training.validation import evaluate_classification

    per_batch = float(np.median(times))
    samples = cfg.batch_size * (cfg.windows if spec["task"] in STEREO_TASKS else 1)
    spec = {k: v for k, v in spec.items() if k not in ("data", "configs")}
    row = {**spec, "s_per_batch": per_batch, "rate": samples / per_batch,
           "cpu_rate": samples / float(np.median(cpu)), "peak_mb": memory[0] if memory else None,
           "mb_per_sample": memory[1] if memory else None, "loss": float(np.mean(losses[-3:])),
           "neurons": neuron_impl() if spec["exec"] != "eager" else "plain", "load": os.getloadavg()[0],
           "batchnorm": "one call" if spec["exec"] == "multistep" and stepnorm.in_use() else "per step",
           "layout": trainer.layout, "params": sum(p.numel() for p in model.parameters())}
    if spec["task"] == "class":
        with torch.no_grad():
            row["accuracy"] = evaluate_classification(model, test, cfg.timesteps, 256)["accuracy_pct"]
    return row


def child(spec: dict) -> dict:
    """One configuration: train warmup + timed batches; returns its row."""
    from training.allocator import configure as configure_malloc
    from training.distributed import teardown

    malloc = configure_malloc()  # as training.train does ($SNN_MALLOC)
    trainer, cfg, model, test, dist, batches = _trainer(spec)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu, losses = [], [], []
    for k, batch in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(trainer.train_step(batch)["task_loss"])
        if k >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dist.enabled:
        teardown(dist)
        if not dist.main:
            return None
    memory = (peak / 1024, max(0, peak - base) / 1024 / cfg.batch_size)
    return {**_row(spec, trainer, cfg, model, test, times, cpu, losses, memory), "malloc": malloc}


def child_interleaved(spec: dict) -> list[dict]:
    """``--interleave``: every configuration of ``spec["configs"]`` in this one process, each with its own
    trainer, in ``spec["rounds"]`` rounds whose order alternates (forward, then backward), each round
    ``batches`` timed steps of every configuration after their warm-up: the host's drift over the run reaches
    all of them alike. Rows: the median over all rounds; memory not measured (one process holds them all)."""
    import torch

    from training.allocator import configure as configure_malloc

    malloc = configure_malloc()
    runs = []
    for c in spec["configs"]:
        one = {**c, "task": spec["task"], "data": spec.get("data"), "batches": spec["batches"],
               "warmup": spec["warmup"]}
        trainer, cfg, model, test, _, batches = _trainer(one)
        for batch in batches[:one["warmup"]]:
            trainer.train_step(batch)
        runs.append({"spec": one, "trainer": trainer, "cfg": cfg, "model": model, "test": test,
                     "batches": batches[one["warmup"]:], "times": [], "cpu": [], "losses": []})
    for r in range(spec["rounds"]):
        for run in (runs if r % 2 == 0 else runs[::-1]):
            torch.set_num_threads(run["spec"]["threads"])
            for batch in run["batches"]:
                t0, c0 = time.perf_counter(), time.process_time()
                run["losses"].append(run["trainer"].train_step(batch)["task_loss"])
                run["times"].append(time.perf_counter() - t0)
                run["cpu"].append(time.process_time() - c0)
    rows = []
    for run in runs:
        torch.set_num_threads(run["spec"]["threads"])
        row = _row({**run["spec"], "interleaved": spec["rounds"]}, run["trainer"], run["cfg"], run["model"],
                   run["test"], run["times"], run["cpu"], run["losses"], None)
        rows.append({**row, "malloc": malloc})
    return rows


def run_interleaved(spec: dict) -> list[dict]:
    """``child_interleaved`` in its own process; on failure one error row per configuration."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         cwd=ROOT)
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["failed"])[-1]
        return [{**c, "task": spec["task"], "error": why} for c in spec["configs"]]
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(spec: dict) -> dict:
    """One configuration in its own process; ``procs`` > 1: that many processes under torchrun (gloo), the
    global batch split between them, the row from rank 0 (its memory, its CPU time: per process)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    if spec.get("procs", 1) > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec['procs']}",
               __file__, "--child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {**spec, "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _workers(r: dict) -> str:
    return f"{r['threads']}" + (f" x {r['procs']}" if r.get("procs", 1) > 1 else "")


def table(rows: list[dict]) -> str:
    lines = ["| task | --exec | --precision | --layout | threads x processes | rate/s (wall) | x eager 1 thread | "
             "rate/s (CPU time) | x eager | s/batch | peak MB | MB/sample | loss | accuracy % | neurons | BatchNorm of "
             "the steps | load avg |",
             "|" + "---|" * 17]
    ones = [r for r in rows if r.get("exec") == "eager" and r["threads"] == 1 and r.get("procs", 1) == 1
            and "rate" in r]
    base = {r["task"]: r["rate"] for r in ones}
    base_cpu = {r["task"]: r["cpu_rate"] for r in ones}
    for r in rows:
        if "error" in r or "skipped" in r:
            why = f"error: {r['error']}" if "error" in r else f"not run: {r['skipped']}"
            lines.append(f"| {r['task']} | {r['exec']} | {r['precision']} | {r.get('layout', 'auto')} | "
                         f"{_workers(r)} | {why} |")
            continue
        speedup = r["rate"] / base[r["task"]] if r["task"] in base else float("nan")
        cpu_up = r["cpu_rate"] / base_cpu[r["task"]] if r["task"] in base_cpu else float("nan")
        acc = f"{r['accuracy']:.1f}" if "accuracy" in r else "-"
        cpu = "- | -" if r.get("procs", 1) > 1 else f"{r['cpu_rate']:.1f} | {cpu_up:.2f}"  # rank 0's CPU alone
        lines.append(f"| {r['task']} | {r['exec']} | {r['precision']} | {r['layout']} | {_workers(r)} | "
                     f"{r['rate']:.1f} | "
                     f"{speedup:.2f} | {cpu} | {r['s_per_batch']:.3f} | "
                     f"{_memory(r)} | "
                     f"{r['loss']:.4f} | {acc} | {r['neurons']} | {r.get('batchnorm', '-')} | {r['load']:.2f} |")
    return "\n".join(lines)


def _memory(r: dict) -> str:
    """The peak and per-sample memory columns; '- | -' where not measured (``--interleave``: one process)."""
    if r.get("peak_mb") is None:
        return "- | -"
    return f"{r['peak_mb']:.0f} | {r['mb_per_sample']:.1f}"


def parse_config(text: str, seed: int) -> dict:
    """One ``--configs`` entry, EXEC:PRECISION:THREADS[xPROCS][:LAYOUT], as a child's spec (without task and
    data); argparse.ArgumentTypeError saying what is wrong with it."""
    from training.execution import EXEC_MODES, LAYOUTS, PRECISIONS

    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"{text!r}: not EXEC:PRECISION:THREADS[:LAYOUT]")
    mode, precision, workers, *layout = parts
    for value, allowed, what in ((mode, EXEC_MODES, "EXEC"), (precision, PRECISIONS, "PRECISION"),
                                 (layout[0] if layout else LAYOUTS[0], LAYOUTS, "LAYOUT")):
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} {value!r} is not one of {', '.join(allowed)}")
    threads, _, procs = workers.partition("x")
    counts = []
    for value, what, (low, high) in ((threads, "THREADS", OPTION_RANGES["threads"][:2]),
                                     (procs or "1", "PROCS", (1, MAX_PROCS))):
        try:
            counts.append(int_between(low, high)(value))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {what} {exc}") from None
    return {"exec": mode, "precision": precision, "threads": counts[0], "procs": counts[1],
            "layout": layout[0] if layout else ("nchw" if mode == "eager" else "auto"), "seed": seed}


def main(argv=None) -> int:
    p = ArgumentParser(prog="python benchmarks/bench_train.py", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="class,stereo",
                   help="comma-separated: class, stereo (default both), stereo-fine (the shipped model's set-up)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help="comma-separated EXEC:PRECISION:THREADS[:LAYOUT], or EXEC:PRECISION:THREADSxPROCS for PROCS "
                        "processes under torchrun (e.g. multistep:fp32:1x2); LAYOUT (--layout) auto, nchw, "
                        "channels-last or conv3d-channels-last; default auto, nchw for eager (the reference)")
    p.add_argument("--batches", type=int_between(1, 100000), default=3, help="timed batches per configuration")
    p.add_argument("--warmup", type=int_between(0, 100000), default=1, help="untimed batches before them")
    p.add_argument("--full", action="store_true", help="--batches 12 --warmup 2 (unless given)")
    p.add_argument("--seed", type=int_between(*OPTION_RANGES["seed"][:2]), default=0,
                   help="seed of the weights and the data order (default 0)")
    p.add_argument("--interleave", type=int_between(1, 10000), metavar="ROUNDS",
                   help="run a task's configurations in one process, alternating ROUNDS times (forward, then "
                        "backward), --batches timed batches each per round: the ratios between them then share "
                        "the host's drift (memory is not measured; THREADSxPROCS configurations are refused)")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        row = child_interleaved(spec) if "configs" in spec else child(spec)
        if row is not None:
            print(json.dumps(row))
        return 0
    tasks = args.tasks.split(",")
    if bad := [t for t in tasks if t not in TASKS]:
        p.error(f"argument --tasks: unknown task {bad[0]!r}; choose from {', '.join(TASKS)}")
    try:
        configs = [parse_config(c, args.seed) for c in args.configs.split(",")]
    except argparse.ArgumentTypeError as exc:
        p.error(f"argument --configs: {exc}")
    if args.interleave and (multi := [c for c, cfg in zip(args.configs.split(","), configs, strict=True)
                                      if cfg["procs"] > 1]):
        p.error(f"argument --interleave: {multi[0]!r} runs under torchrun in processes of its own; interleave "
                f"configurations of one process (THREADS without xPROCS)")
    if args.json and Path(args.json).is_dir():  # found out before the run, not after it
        p.error(f"argument --json: {args.json} is a folder")
    if args.full and args.batches == 3:
        args.batches, args.warmup = 12, 2
    from training.allocator import configure
    from training.errors import TrainError
    from training.execution import bf16_conv3d_gradients_ok, cpu_has_bf16

    try:
        malloc = configure()  # as every run's child does (training.allocator)
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"CPU flags: {cpu_flags()}; cores available: {len(os.sched_getaffinity(0))}; "
          f"load average at start: {os.getloadavg()[0]:.2f}; {malloc}")
    rows = []
    tmp = tempfile.TemporaryDirectory()
    for task in tasks:
        data = None
        if task in STEREO_TASKS:
            data = str(Path(tmp.name) / f"{task}.pt")
            stereo_data(Path(data), task)
        task_rows, together = [], []
        for c, config in zip(args.configs.split(","), configs, strict=True):
            spec = {"task": task, **config, "batches": args.batches, "warmup": args.warmup, "data": data}
            if spec["precision"] == "bf16" and not cpu_has_bf16():  # training refuses it there: a row says so
                task_rows.append({**spec, "skipped": "this CPU has neither AMX nor AVX512-BF16 (training refuses "
                                                     "bf16)"})
                continue
            if spec["precision"] == "bf16" and task in STEREO_TASKS and not bf16_conv3d_gradients_ok():
                task_rows.append({**spec, "skipped": "this CPU's bfloat16 3-D convolutions give wrong weight gradients "
                                                     "(training refuses bf16 for stereo)"})
                continue
            if args.interleave:
                task_rows.append(None)  # filled in below, in --configs order
                together.append(config)
                continue
            t0 = time.perf_counter()
            task_rows.append(run_child(spec))
            print(f"  {task} {c}: {time.perf_counter() - t0:.0f} s: {json.dumps(task_rows[-1])}", file=sys.stderr,
                  flush=True)
        if together:
            t0 = time.perf_counter()
            done = iter(run_interleaved({"task": task, "configs": together, "rounds": args.interleave,
                                         "batches": args.batches, "warmup": args.warmup, "data": data}))
            task_rows = [r if r is not None else next(done) for r in task_rows]
            print(f"  {task}, {len(together)} configurations interleaved over {args.interleave} rounds: "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        rows += task_rows
    tmp.cleanup()
    print(table(rows))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        from runtime.core.atomic import write_text_atomic

        try:
            write_text_atomic(Path(args.json), json.dumps(rows, indent=1))
        except OSError as exc:  # the table above already holds every row
            print(f"error: --json {args.json}: {first_line(exc)}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
