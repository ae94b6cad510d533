"""Does the tiny model's vision tower see shapes? A linear probe of each patch's object shape (shapes-vqa's
per-patch targets, class 0: no object) on the tower's last hidden states: fitted on the patches of 3,000 generated
train images (seed [0, 1]), scored on 1,000 test images (seed [0, 2]) over patches that show an object and over
patches that hold an object's centre.

    python experiments/vision_probe.py --weights artifacts/shapes/ck        # a trained checkpoint's tower
    python experiments/vision_probe.py --pretrain-steps 1500                # a fresh tower after N stage-1 steps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from profiling_bridge import shapes_vqa, tiny_vqa  # noqa: E402
from profiling_bridge.archs import build_model  # noqa: E402


def patches(model, processor, n: int, seed):
    with shapes_vqa.temporary_items(n, seed) as (items, targets):
        px, row = tiny_vqa._pixels(items, processor)
        y = torch.zeros((len(px), *targets.shape[1:]), dtype=torch.long)
        y[torch.from_numpy(row)] = torch.from_numpy(targets)
    return px, y


def hidden(model, px):
    with torch.no_grad():
        return torch.cat([model.model.vision_tower(pixel_values=px[i:i + 256], output_hidden_states=True).hidden_states[-1][:, 1:]
                          for i in range(0, len(px), 256)])


def probe(model, processor, train_images: int = 3000, test_images: int = 1000, steps: int = 400) -> dict:
    torch.manual_seed(0)
    (px, y), (pt, yt) = patches(model, processor, train_images, [0, 1]), patches(model, processor, test_images, [0, 2])
    h, ht = hidden(model, px), hidden(model, pt)
    X, Y = h.reshape(-1, h.shape[-1]), y[..., 0].reshape(-1)
    Xt, Yt, centre = ht.reshape(-1, ht.shape[-1]), yt[..., 0].reshape(-1), yt[..., 3].reshape(-1) > 0
    mu, sd = X.mean(0), X.std(0) + 1e-6
    lin = torch.nn.Linear(X.shape[1], int(Y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin((X - mu) / sd), Y).backward()
        opt.step()
    with torch.no_grad():
        p = lin((Xt - mu) / sd).argmax(-1)
    obj = Yt > 0
    return {"object_patches": round(float((p[obj] == Yt[obj]).float().mean()), 4),
            "centre_patches": round(float((p[centre] == Yt[centre]).float().mean()), 4),
            "test_object_patches": int(obj.sum()), "test_centre_patches": int(centre.sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--weights", help="a train-tiny checkpoint directory")
    g.add_argument("--pretrain-steps", type=int, help="stage-1 steps of a fresh tower (12,000 train questions' images)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res: dict = {"command": " ".join(["python", "experiments/vision_probe.py", *(argv or sys.argv[1:])])}
    if a.weights:
        model = build_model(tiny_vqa.ARCH, weights=a.weights).eval()
        processor = tiny_vqa.image_processor(model, a.weights)
    else:
        model = build_model(tiny_vqa.ARCH, seed=0, experts_implementation="eager").train()
        processor = tiny_vqa.image_processor(model)
        px, y = patches(model, processor, tiny_vqa.SHAPES_TRAIN_SIZE, [0, 1])
        t0 = time.perf_counter()
        losses = tiny_vqa.pretrain_vision(model, px, y, sum(tiny_vqa.PATCH_HEADS) + 1, tiny_vqa.patch_loss, a.pretrain_steps,
                                          64, 1e-3, np.random.default_rng(0), per_patch=True)
        res.update(pretrain_seconds=round(time.perf_counter() - t0, 1), final_loss=round(float(np.mean(losses[-50:])), 4))
        model.eval()
    res["shape_probe_accuracy"] = probe(model, processor)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
