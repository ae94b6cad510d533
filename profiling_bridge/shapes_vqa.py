"""shapes-vqa: procedurally generated VQA in easy-vqa's image style, with requests whose difficulty varies.

64x64 images on a light background with filled circles, rectangles and triangles in easy-vqa's eight colours
(docs/measured_table.md). Unlike easy-vqa (one large shape per image), a scene holds 1-5 objects, *small*
(half-extent 3-4 px, smaller than a patch of 8 px) or *large* (8-12 px), and optional clutter (1-px specks in the
same colours), so the knobs act differently per request: small or many objects need vision tokens, compositional
questions need depth. Five question types (the requests' ``task_type``), every answer one word:

* ``count``: "how many shapes are there?" / "how many circles are there?" (0-5);
* ``exists``: "is there a small red circle?" (yes/no; half the questions name an object of the scene, half change
  one of its attributes so that no object matches);
* ``color``: "what color is the small circle?" (the size and shape name one object);
* ``shape``: "what is the large teal shape?" (the size and colour name one object);
* ``relation``: "what color is the shape left of the large circle?" (left of, right of, above, below: exactly one
  object lies that way of the anchor).

Request features (the table's columns besides ``prompt_tokens``): ``object_count``, ``object_size`` (half-extent in
px of the object the question is about: the smallest counted object, the named or anchor object; the smallest
object of the scene when none is), ``clutter`` (level 0, 1, 2) and the image statistics of easy-vqa requests
(``edge_density``, ``colour_count``, ``fg_fraction``). Everything is seeded: the same seed gives the same scenes,
questions and PNG files.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from e5jax.io import atomic_write
from profiling_bridge.archs import BridgeError
from profiling_bridge.quality import QAItem

IMAGE_SIZE = 64
COLOURS = dict(black=(0, 0, 0), blue=(0, 0, 255), brown=(165, 42, 42), gray=(128, 128, 128), green=(0, 255, 0),
               red=(255, 0, 0), teal=(0, 128, 128), yellow=(255, 255, 0))  # easy-vqa's RGB values
SHAPES = ("circle", "rectangle", "triangle")
SIZES = dict(small=(3, 4), large=(8, 12))  # half-extent range in px (inclusive)
RELATIONS = ("left of", "right of", "above", "below")
QUESTION_TYPES = ("count", "exists", "color", "shape", "relation")
CLUTTER_SPECKS = (0, 12, 40)  # specks per clutter level
MAX_OBJECTS = 5
MARGIN = 2  # px between objects' bounding boxes; also the least centre offset of a relation
PATCH = 8  # the tiny arch's ViT patch in px (:func:`patch_targets`)
MIN_COVER = 8  # px of an object in a patch for the patch to show it (besides the patch of its centre)
TEMPLATES = ("how many shapes are there?", "how many {shape}s are there?", "is there a {size} {colour} {shape}?",
             "what color is the {size} {shape}?", "what is the {size} {colour} shape?",
             "what color is the shape {relation} the {size} {shape}?")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str  # small | large
    x: int  # centre, px
    y: int
    r: int  # half-extent, px


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    clutter: int
    background: tuple[int, int, int]
    specks: tuple[tuple[int, int, str], ...]  # (x, y, colour)


# --------------------------------------------------------------------------- scenes
def render(scene: Scene) -> Image.Image:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), scene.background)
    draw = ImageDraw.Draw(img)
    for x, y, c in scene.specks:
        draw.point((x, y), fill=COLOURS[c])
    for o in scene.objects:
        draw_object(draw, o, COLOURS[o.colour])
    return img


def draw_object(draw: ImageDraw.ImageDraw, o: Obj, fill) -> None:
    box = (o.x - o.r, o.y - o.r, o.x + o.r, o.y + o.r)
    if o.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif o.shape == "rectangle":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(o.x, o.y - o.r), (o.x - o.r, o.y + o.r), (o.x + o.r, o.y + o.r)], fill=fill)


def random_scene(rng: np.random.Generator, n_objects: int, clutter: int) -> Scene | None:
    """``n_objects`` random objects without overlap (None if they did not fit), specks for the clutter level."""
    objects: list[Obj] = []
    for _ in range(n_objects):
        size = ("small", "large")[int(rng.integers(2))]
        r = int(rng.integers(SIZES[size][0], SIZES[size][1] + 1))
        for _attempt in range(50):
            x, y = (int(v) for v in rng.integers(r + 1, IMAGE_SIZE - r - 1, size=2))
            if all(max(abs(x - o.x), abs(y - o.y)) > r + o.r + MARGIN for o in objects):
                break
        else:
            return None
        objects.append(Obj(SHAPES[int(rng.integers(3))], list(COLOURS)[int(rng.integers(len(COLOURS)))], size, x, y, r))
    background = tuple(int(v) for v in rng.integers(225, 256, size=3))
    specks = tuple((int(rng.integers(IMAGE_SIZE)), int(rng.integers(IMAGE_SIZE)), list(COLOURS)[int(rng.integers(len(COLOURS)))])
                   for _ in range(CLUTTER_SPECKS[clutter]))
    return Scene(tuple(objects), clutter, background, specks)


# --------------------------------------------------------------------------- answers (pure functions of a scene)
def matching(scene: Scene, **attrs) -> list[Obj]:
    return [o for o in scene.objects if all(getattr(o, k) == v for k, v in attrs.items())]


def beyond(anchor: Obj, other: Obj, relation: str) -> bool:
    """``other`` lies ``relation`` the anchor: its centre more than MARGIN px that way (image y grows downwards)."""
    dx, dy = other.x - anchor.x, other.y - anchor.y
    return dict(zip(RELATIONS, (-dx, dx, -dy, dy)))[relation] > MARGIN


def related(scene: Scene, anchor: Obj, relation: str) -> list[Obj]:
    return [o for o in scene.objects if o is not anchor and beyond(anchor, o, relation)]


def count_answer(scene: Scene, shape: str | None = None) -> str:
    return str(len(matching(scene, shape=shape) if shape else scene.objects))


def exists_answer(scene: Scene, size: str, colour: str, shape: str) -> str:
    return "yes" if matching(scene, size=size, colour=colour, shape=shape) else "no"


def ask(rng: np.random.Generator, qtype: str, scene: Scene) -> tuple[str, str, int] | None:
    """(question, answer, object_size) of a ``qtype`` question about ``scene``; None where the scene cannot pose one
    (no object named uniquely, no single related object)."""
    smallest = min(o.r for o in scene.objects)
    if qtype == "count":
        if rng.random() < 0.5:
            return "how many shapes are there?", count_answer(scene), smallest
        shape = SHAPES[int(rng.integers(3))]
        counted = matching(scene, shape=shape)
        return f"how many {shape}s are there?", count_answer(scene, shape), min((o.r for o in counted), default=smallest)
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    if qtype == "exists":
        attrs = dict(size=o.size, colour=o.colour, shape=o.shape)
        if rng.random() < 0.5:  # change one attribute; keep it only if no object matches then
            name = ("size", "colour", "shape")[int(rng.integers(3))]
            values = dict(size=tuple(SIZES), colour=tuple(COLOURS), shape=SHAPES)[name]
            attrs[name] = [v for v in values if v != attrs[name]][int(rng.integers(len(values) - 1))]
        question = "is there a {size} {colour} {shape}?".format(**attrs)
        return question, exists_answer(scene, **attrs), o.r
    if qtype == "color":
        if len(matching(scene, size=o.size, shape=o.shape)) != 1:
            return None
        return f"what color is the {o.size} {o.shape}?", o.colour, o.r
    if qtype == "shape":
        if len(matching(scene, size=o.size, colour=o.colour)) != 1:
            return None
        return f"what is the {o.size} {o.colour} shape?", o.shape, o.r
    if qtype == "relation":
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        targets = related(scene, o, relation)
        if len(matching(scene, size=o.size, shape=o.shape)) != 1 or len(targets) != 1:
            return None
        return f"what color is the shape {relation} the {o.size} {o.shape}?", targets[0].colour, o.r
    raise BridgeError(f"unknown question type {qtype!r} (known: {', '.join(QUESTION_TYPES)})")


def check_types(types) -> tuple[str, ...]:
    types = tuple(types)
    unknown = [t for t in types if t not in QUESTION_TYPES]
    if unknown or not types:
        raise BridgeError(f"unknown question type {unknown[0]!r} (known: {', '.join(QUESTION_TYPES)})" if unknown
                          else "no question type given")
    return types


def generate(n: int, seed: int, types=QUESTION_TYPES) -> list[tuple[Scene, str, str, str, dict]]:
    """``n`` requests (scene, question, answer, question type, features), the types in turn (equally often)."""
    types = check_types(types)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        qtype = types[len(out) % len(types)]
        low = 2 if qtype == "relation" else 1
        scene = random_scene(rng, int(rng.integers(low, MAX_OBJECTS + 1)), int(rng.integers(len(CLUTTER_SPECKS))))
        qa = None if scene is None else ask(rng, qtype, scene)
        if qa is None:
            continue
        question, answer, size = qa
        out.append((scene, question, answer, qtype, dict(object_count=float(len(scene.objects)), object_size=float(size),
                                                         clutter=float(scene.clutter))))
    return out


def patch_targets(scene: Scene, patch: int = PATCH) -> np.ndarray:
    """Per patch ``[(64 / patch)^2, 4]`` (row-major, the ViT's patch order): shape, colour and size index + 1 of the
    object the patch shows (0: none) and 1 where the patch holds an object's centre pixel (the vision-tower stage's
    per-object targets, :func:`profiling_bridge.tiny_vqa.pretrain_vision`). A patch shows the object whose centre it
    holds (no two centres share a patch), else the object covering most of its pixels if at least ``MIN_COVER``;
    clutter specks are background."""
    g = IMAGE_SIZE // patch
    cover = np.zeros((len(scene.objects) + 1, g, g))  # row 0: background
    for i, o in enumerate(scene.objects, 1):
        mask = Image.new("1", (IMAGE_SIZE, IMAGE_SIZE), 0)
        draw_object(ImageDraw.Draw(mask), o, 1)
        cover[i] = np.asarray(mask).reshape(g, patch, g, patch).sum((1, 3))
        cover[i, o.y // patch, o.x // patch] += IMAGE_SIZE * IMAGE_SIZE
    cover[0] = MIN_COVER - 0.5
    shown = cover.argmax(0).ravel()
    table = np.array([(0, 0, 0, 0)] + [(SHAPES.index(o.shape) + 1, list(COLOURS).index(o.colour) + 1,
                                        list(SIZES).index(o.size) + 1, 0) for o in scene.objects])
    out = table[shown]
    for o in scene.objects:
        out[(o.y // patch) * g + o.x // patch, 3] = 1
    return out


def vocabulary_words() -> set[str]:
    """Every word the questions and answers use (tokenized as the word-level tokenizer splits them)."""
    import re

    filled = [t.format(shape=s, size=z, colour=c, relation=r) for t in TEMPLATES for s in SHAPES for z in SIZES
              for c in COLOURS for r in RELATIONS]
    answers = [*COLOURS, *SHAPES, "yes", "no", *(str(i) for i in range(MAX_OBJECTS + 1))]
    return set(re.findall(r"\w+|[^\w\s]+", " ".join(filled + answers).lower()))


# --------------------------------------------------------------------------- datasets
def write_images(requests, directory: Path, prefix: str, stats: bool = True) -> list[Path]:
    """Each request's PNG under ``directory/images``; ``stats`` adds the image statistics to its features."""
    from profiling_bridge.tiny_vqa import image_stats

    (directory / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (scene, *_rest, features) in enumerate(requests):
        path = directory / "images" / f"{prefix}{i}.png"
        render(scene).save(path)
        if stats:
            features.update(image_stats(path))
        paths.append(path)
    return paths


def items(n: int, seed: int, directory: str | Path, split: str = "train", types=QUESTION_TYPES,
          stats: bool = True) -> tuple[list[QAItem], np.ndarray]:
    """``n`` generated requests as quality-harness items (images written under ``directory``) and each one's
    :func:`patch_targets` ``[n, 64, 4]``."""
    reqs = generate(n, seed, types)
    paths = write_images(reqs, Path(directory), f"{split}-", stats)
    out = [QAItem(id=f"shapes-{split}-{i}", image=p, question=q, answers=(a,), task_type=t, split=split,
                  metric="exact_match", features=tuple(sorted(f.items())))
           for i, ((_s, q, a, t, f), p) in enumerate(zip(reqs, paths))]
    return out, np.stack([patch_targets(r[0]) for r in reqs])


@contextlib.contextmanager
def temporary_items(n: int, seed: int, split: str = "train", types=QUESTION_TYPES, stats: bool = False):
    """:func:`items` in a temporary directory removed on exit (training and evaluation read the images inside)."""
    with tempfile.TemporaryDirectory(prefix="shapes-vqa-") as d:
        yield items(n, seed, d, split, types, stats)


def write_requests(out: str | Path, requests: int = 1500, seed: int = 0, val_fraction: float = 0.25,
                   types=QUESTION_TYPES) -> Path:
    """``requests`` seeded requests as the bridge's JSONL quality dataset (``out/requests.jsonl``, images in
    ``out/images``); a random ``val_fraction`` of them (each has its own image) are ``val``."""
    types = check_types(types)
    if requests < 1:
        raise BridgeError("--requests must be at least 1")
    if not 0 < val_fraction < 1:
        raise BridgeError("--val-fraction must be in (0, 1)")
    out = Path(out)
    reqs = generate(requests, seed, types)
    rng = np.random.default_rng([seed, 1])
    val = set(rng.choice(requests, size=max(1, round(val_fraction * requests)), replace=False).tolist())
    if len(val) == requests:
        raise BridgeError(f"--requests {requests} with --val-fraction {val_fraction}: no train request left")
    paths = write_images(reqs, out, "")
    lines = [dict(id=f"shapes-{i}", image=str(p.relative_to(out)), question=q, answers=[a], task_type=t,
                  split="val" if i in val else "train", metric="exact_match", features=f)
             for i, ((_s, q, a, t, f), p) in enumerate(zip(reqs, paths))]
    path = out / "requests.jsonl"
    text = "".join(json.dumps(x) + "\n" for x in lines)
    atomic_write(path, lambda f: f.write(text))
    return path
