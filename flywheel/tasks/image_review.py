"""The image task's review artifact: a grid of degraded | champion | candidate | target images."""

from __future__ import annotations

from pathlib import Path

from flywheel.tasks.image_model import psnr, to_uint8


def grid_png(data, roles: dict, path: Path) -> Path:
    """One row per sample of ``data`` (an ImageDataset), each image titled with its PSNR to the
    target; ``roles``: champion and candidate models (a missing one is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    items = [data[i] for i in range(len(data))]
    inputs = torch.stack([it["pixel_values"] for it in items])
    targets = torch.stack([it["target"] for it in items])
    columns = [("degraded", inputs)]
    with torch.inference_mode():
        for role in ("champion", "candidate"):
            if roles.get(role) is not None:
                model = roles[role].eval().to("cpu")
                columns.append((role, model(inputs).float().clamp(0, 1)))
    columns.append(("target", targets))
    fig, axes = plt.subplots(len(items), len(columns), figsize=(2.2 * len(columns), 2.3 * len(items)))
    axes = axes.reshape(len(items), len(columns))
    for i in range(len(items)):
        for j, (name, images) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(to_uint8(images[i]))
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "target":
                name = f"{name} {float(psnr(images[i : i + 1], targets[i : i + 1])[0]):.1f} dB"
            ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
