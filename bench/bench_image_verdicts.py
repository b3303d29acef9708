"""Do `make demo-image`'s verdicts hold, and how noisy is PSNR run to run? (issue 28, item 1)

Replays the image demo's decisions without the stream, as ``bench/bench_demo_verdicts.py``
does for the text demo: the demo's patches, settings and golden set (``demo.image``), a v1
bootstrap split as ``flywheel model bootstrap`` splits it, then the demo's rounds as retrains of the
champion through ``training.dataset.assemble`` (hash splits, replay, holdouts), ``fit``,
``evaluate`` and ``orchestration.promotion.decide``:

* round 1: ``noise:25``, honest targets; round 2: ``noise:25+jpeg:40``, honest targets;
* round 3 (buggy): ``noise:25+jpeg:40`` whose targets a labelling pipeline cut 4 px off
  (``image_corpus``'s ``misalign`` crop-shift) and Gaussian-blurred (sigma 1.5): subtler than
  the demo's radius-4 blur.

v1 is bootstrapped once (training seed ``--boot-seed``); each run retrains from it with its own
training seed, so the spread of the round-1 candidates is retraining noise on the same data.
The chain follows the current default gate (a rejected round is not replayed); every verdict
includes the ratchet (the best promoted golden PSNR, ``promotion.ratchet_budget``). Every
candidate is also judged with absolute-dB PSNR guards (``relative=False``) on the same report.

    python bench/bench_image_verdicts.py [--runs 3] [--noise-seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK = "image-restoration"
ABS_TOLERANCES = (0.1, 0.2, 0.3)  # dB
ROUNDS = (("honest", 1, "noise:25"), ("honest", 2, "noise:25+jpeg:40"), ("buggy", 3, "noise:25+jpeg:40"))
BUG_BLUR_SIGMA = 1.5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Replay:
    """The demo's data and settings in a scratch state dir; fits, evaluations and verdicts."""

    def __init__(self, tmp: Path):
        from demo.image import BOOT_N, MODEL, demo_settings, golden_frame
        from flywheel.settings import load_settings
        from flywheel.tasks import spec_for
        from training.image_corpus import DRIFT, TRAIN_PHOTOS

        demo = demo_settings()  # the demo's training section (its ports are not used)
        self.settings = load_settings(state_dir=tmp, training=demo.training.model_dump(mode="json"))
        self.rules, self.model, self.tmp = self.settings.promotion, MODEL, tmp
        self.spec = spec_for(self.settings, TASK)
        self.golden = self.spec.load_samples(golden_frame()).reset_index(drop=True)
        self.boot = self._samples(BOOT_N, DRIFT[0], 0, TRAIN_PHOTOS, prefix="")
        self.frames: dict[int, object] = {}

    def _samples(self, n, degradation, seed, photos, prefix, buggy=False):
        from demo.image import SIZE
        from training.image_corpus import restoration_frame

        corrupt = "misalign" if buggy else None
        frame = restoration_frame(n, degradation, seed=seed, photo_names=photos, size=SIZE, corrupt=corrupt)
        if buggy:
            frame["target_png_b64"] = [_blur(t, BUG_BLUR_SIGMA) for t in frame["target_png_b64"]]
        frame["sample_id"] = prefix + frame["sample_id"]  # the demo's event ids: r<round>-<sample>
        return self.spec.load_samples(frame).assign(confidence=1.0)

    def round_frame(self, kind: str, no: int, degradation: str):
        from demo.image import ROUND_N
        from training.image_corpus import TRAIN_PHOTOS

        if no not in self.frames:
            self.frames[no] = self._samples(
                ROUND_N, degradation, no, TRAIN_PHOTOS, f"r{no}-", buggy=kind == "buggy"
            )
        return self.frames[no]

    def cfg(self, seed: int):
        return self.settings.training.model_copy(update={"seed": seed})

    def bootstrap(self, seed: int):
        from training.data import split_by_hash, stratified_sample
        from training.trainer import fit

        cfg, folder = self.cfg(seed), self.tmp / "v1"
        train, val, old_holdout = split_by_hash(self.boot, cfg.holdout_fraction, cfg.validation_fraction)
        fit(self.spec, [], train, val, cfg, folder, progress=False)
        holdouts = {
            "golden": self.golden,
            "old": stratified_sample(old_holdout, cfg.max_old_holdout, cfg.seed, None),
        }
        report = self.evaluate(folder, None, holdouts)
        return folder, report, self.decide(report, first=True)

    def retrain(self, seed: int, new, old, champion: Path, folder: Path):
        from datetime import UTC, datetime

        from training.dataset import assemble
        from training.trainer import fit

        cfg = self.cfg(seed)
        data = assemble(cfg, self.spec, new, old, self.golden, (None, datetime.now(UTC)))
        fit(self.spec, [], data.train, data.validation, cfg, folder, champion, progress=False)
        holdouts = {k: v for k, v in data.holdouts.items() if k in ("golden", "old")}
        return self.evaluate(folder, champion, holdouts), holdouts

    def evaluate(self, folder: Path, champion: Path | None, holdouts: dict):
        from training.evaluate import evaluate
        from training.trainer import version_roles

        roles = version_roles(self.spec, [], folder, champion)
        return evaluate(self.spec, [], roles, holdouts, self.settings.training.eval_batch_size)

    def compare(self, a: Path, b: Path, holdouts: dict):
        """b (as candidate) against a (as champion), pair by pair: {holdout: check_guard dict}."""
        from orchestration.promotion import check_guard
        from training.evaluate import evaluate
        from training.trainer import load_adapter_model

        roles = {
            "champion": load_adapter_model(self.spec, [], a),
            "candidate": load_adapter_model(self.spec, [], b),
        }
        report = evaluate(self.spec, [], roles, holdouts, self.settings.training.eval_batch_size)
        return {h: check_guard(report, abs_guard(h, 0.0), self.rules.confidence) for h in holdouts}

    def decide(self, report, first: bool = False, tolerance: float | None = None, reference=None):
        """``reference``: the ratchet's (the best promoted golden score, as the registry finds it)."""
        from orchestration.promotion import decide

        rules = self.rules
        if tolerance is not None:  # these absolute-dB guards instead of the task's (0.2 dB)
            guards = [abs_guard("golden", tolerance), abs_guard("old", tolerance)]
            rules = rules.model_copy(update={"guards": {**rules.guards, TASK: guards}})
        return decide(report, rules, self.model, TASK, first=first, reference=reference)


def abs_guard(holdout: str, tolerance: float):
    from flywheel.settings import Guard

    return Guard(metric="psnr", holdout=holdout, tolerance=tolerance, relative=False, detect=0.5)


def _blur(text: str, sigma: float) -> str:
    import numpy as np
    from PIL import Image, ImageFilter

    from flywheel.images import decode_png_b64, png_b64

    image = Image.fromarray(decode_png_b64(text), mode="RGB").filter(ImageFilter.GaussianBlur(radius=sigma))
    return png_b64(np.asarray(image, dtype=np.uint8))


def candidate_row(replay: Replay, seed: int, kind: str, no: int, degradation: str, report, ref) -> dict:
    default = replay.decide(report, reference=ref)
    checks = {c["guard"]: c for c in default.checks}
    row = {"seed": seed, "round": f"{no} {kind} ({degradation})", "kind": kind, "default": default.label}
    for h in ("golden", "old"):
        c = checks.get(f"{h}.psnr", {})
        row[h] = (
            report.value(h, "champion"),
            report.value(h, "candidate"),
            c.get("drop"),
            c.get("lower_bound"),
        )
        row[f"n_{h}"] = c.get("n")
    for tol in ABS_TOLERANCES:
        row[tol] = replay.decide(report, tolerance=tol, reference=ref).label
    row["why"] = "; ".join(default.reasons)
    return row


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    low, high = min(values), max(values)
    return f"{statistics.mean(values):.3f} | {low:.3f} | {high:.3f} | {high - low:.3f} | {sd:.3f}"


def verdict_tables(rows: list[dict]) -> None:
    tols = " | ".join(f"abs {t:g} dB" for t in ABS_TOLERANCES)
    print(
        "| seed | round | golden champ → cand | old champ → cand | golden drop (LB95), n "
        f"| old drop (LB95), n | default gate | {tols} |"
    )
    print("|---" * (7 + len(ABS_TOLERANCES)) + "|")
    for r in rows:
        psnr = [f"{r[h][0]:.3f} → {r[h][1]:.3f}" for h in ("golden", "old")]
        drops = [f"{r[h][2]:+.3f} ({r[h][3]:+.3f}), {r['n_' + h]}" for h in ("golden", "old")]
        cells = [str(r["seed"]), r["round"], *psnr, *drops, r["default"], *(r[t] for t in ABS_TOLERANCES)]
        print("| " + " | ".join(cells) + " |")
    print(
        "\ndrop = champion PSNR - candidate PSNR in dB (positive: worse); LB95 = one-sided 95 % lower bound"
    )
    print("\n| guard | honest rounds promoted | buggy rounds rejected |\n|---|---|---|")
    honest, buggy = [r for r in rows if r["kind"] == "honest"], [r for r in rows if r["kind"] == "buggy"]
    for key in ("default", *ABS_TOLERANCES):
        name = "the default gate (0.2 dB guards + ratchet)" if key == "default" else f"absolute {key:g} dB"
        ok, bad = sum(r[key] == "promoted" for r in honest), sum(r[key] == "rejected" for r in buggy)
        print(f"| {name} | {ok} of {len(honest)} | {bad} of {len(buggy)} |")


def noise_tables(replay: Replay, first: dict) -> None:
    seeds = list(first)
    print(f"\n## Retraining noise: round 1 from the same v1 on the same data, training seeds {seeds}\n")
    print("| holdout | n | champion v1 | mean | min | max | max-min | std |\n" + "|---" * 8 + "|")
    for h in ("golden", "old"):
        values = [rep.value(h, "candidate") for _, rep, _ in first.values()]
        ref = first[seeds[0]][1]
        print(f"| {h} | {ref.sets[h].size} | {ref.value(h, 'champion'):.3f} | {spread(values)} |")
    print("\n| honest candidates (a as champion, b as candidate) | golden drop (LB95) | old drop (LB95) |")
    print("|---|---|---|")
    for a, b in combinations(seeds, 2):
        checks = replay.compare(first[a][0], first[b][0], first[a][2])
        cells = [f"{checks[h]['drop']:+.3f} ({checks[h]['lower_bound']:+.3f})" for h in ("golden", "old")]
        print(f"| seed {a} → seed {b} | {cells[0]} | {cells[1]} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="training seeds 0..runs-1, each a full replay")
    parser.add_argument(
        "--noise-seeds", type=int, default=3, help="round-1 retrains for the noise table (>= runs)"
    )
    parser.add_argument("--boot-seed", type=int, default=0)
    args = parser.parse_args()

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    rows, tmp_dir = [], tempfile.TemporaryDirectory(prefix="flywheel-bench-image-verdicts-")
    tmp = Path(tmp_dir.name)
    replay = Replay(tmp)
    log(f"bootstrap v1: {len(replay.boot)} patches, golden {len(replay.golden)} (seed {args.boot_seed})")
    v1, boot_report, boot_verdict = replay.bootstrap(args.boot_seed)
    log(f"  v1 {boot_verdict.label} ({time.perf_counter() - started:.0f} s)")

    # Round 1 from v1 with several training seeds: retraining noise on the same data.
    noise_seeds = list(range(max(args.noise_seeds, args.runs)))
    kind, no, degradation = ROUNDS[0]
    first: dict[int, tuple] = {}
    for seed in noise_seeds:
        t = time.perf_counter()
        folder = tmp / f"s{seed}-r1"
        report, holdouts = replay.retrain(
            seed, replay.round_frame(kind, no, degradation), replay.boot, v1, folder
        )
        first[seed] = (folder, report, holdouts)
        golden = report.value("golden", "candidate")
        log(f"  seed {seed} round 1: golden {golden:.3f} dB ({time.perf_counter() - t:.0f} s)")

    import pandas as pd

    from orchestration.promotion import Reference

    for seed in range(args.runs):
        champion, old = v1, replay.boot
        best = Reference(1, boot_report.value("golden", "candidate"))  # the ratchet's reference
        for kind, no, degradation in ROUNDS:
            t = time.perf_counter()
            new = replay.round_frame(kind, no, degradation)
            if no == 1:
                folder, report, _ = first[seed]
            else:
                folder = tmp / f"s{seed}-r{no}"
                report, _ = replay.retrain(seed, new, old, champion, folder)
            row = candidate_row(replay, seed, kind, no, degradation, report, best)
            rows.append(row)
            log(f"  seed {seed} round {no} {kind}: {row['default']} ({time.perf_counter() - t:.0f} s)")
            if row["default"] == "promoted":
                champion, old = folder, pd.concat([old, new], ignore_index=True)
                if report.value("golden", "candidate") > best.value:
                    best = Reference(no + 1, report.value("golden", "candidate"))

    g, o = boot_report.value("golden", "candidate"), boot_report.value("old", "candidate")
    print(f"## Image demo verdicts replayed ({args.runs} runs, {time.perf_counter() - started:.0f} s)\n")
    print(
        f"v1 (bootstrap, seed {args.boot_seed}): golden {g:.3f} dB (degraded input "
        f"{boot_report.value('golden', 'baseline'):.3f}), old {o:.3f} dB: {boot_verdict.label}\n"
    )
    verdict_tables(rows)
    noise_tables(replay, first)
    whys = [(r["seed"], r["round"], r["why"]) for r in rows if r["why"]]
    if whys:
        print("\nreasons (default guards):")
        for seed, rnd, why in whys:
            print(f"- seed {seed}, round {rnd}: {why}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    tmp_dir.cleanup()


if __name__ == "__main__":
    main()
