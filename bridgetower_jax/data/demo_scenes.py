"""Procedural scenes for the demo corpus: coloured shapes on a 3x3 grid, and the texts about them.

Every text is computed from the scene, so a model can learn the captions, answers, NLVR2 labels
and entailment labels from the pixels. The scene itself is a small value object; drawing and
text generation are pure functions of it plus an explicit `np.random.Generator`.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 215),
    "yellow": (230, 200, 30),
    "purple": (135, 55, 165),
}
SHAPES = ("circle", "square", "triangle")
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
BACKGROUNDS = ((235, 235, 235), (225, 225, 215), (245, 240, 230), (215, 220, 225))
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_OBJECTS = 4


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    row: int
    column: int

    @property
    def place(self) -> str:
        return f"{ROWS[self.row]} {COLUMNS[self.column]}"


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        return sum(1 for o in self.objects
                   if (shape is None or o.shape == shape) and (colour is None or o.colour == colour))

    def has(self, shape: str | None = None, colour: str | None = None) -> bool:
        return self.count(shape, colour) > 0


def random_scene(rng: np.random.Generator) -> Scene:
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = rng.choice(9, size=n, replace=False)
    objects = tuple(
        SceneObject(shape=SHAPES[rng.integers(len(SHAPES))],
                    colour=list(COLOURS)[rng.integers(len(COLOURS))],
                    row=int(c) // 3, column=int(c) % 3)
        for c in sorted(cells))
    return Scene(objects=objects, background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))])


def draw_scene(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for obj in scene.objects:
        radius = cell * float(rng.uniform(0.28, 0.4))
        cx = (obj.column + 0.5) * cell + float(rng.uniform(-0.08, 0.08)) * cell
        cy = (obj.row + 0.5) * cell + float(rng.uniform(-0.08, 0.08)) * cell
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        elif obj.shape == "square":
            draw.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)],
                         fill=fill)
    return image


def encode_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90) if fmt == "JPEG" else image.save(buffer, format=fmt)
    return buffer.getvalue()


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + "s"


def _a_list(objects: Sequence[SceneObject]) -> str:
    parts = [f"a {o.colour} {o.shape}" for o in objects]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# ---- captions (COCO / Flickr30K style, five per image) -------------------------------------------

def captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    n = len(scene.objects)
    obj = scene.objects[rng.integers(n)]
    shape = max(SHAPES, key=lambda s: (scene.count(s), -SHAPES.index(s)))
    colours = sorted({o.colour for o in scene.objects})
    return [
        f"a picture of {NUMBER_WORDS[n]} {_plural('shape', n)} on a plain background.",
        f"{_a_list(scene.objects)}.",
        f"a {obj.colour} {obj.shape} in the {obj.place} of the picture.",
        f"there {'is' if scene.count(shape) == 1 else 'are'} {NUMBER_WORDS[scene.count(shape)]} "
        f"{_plural(shape, scene.count(shape))} in this image.",
        f"a drawing with {' and '.join(colours)} {_plural('shape', len(colours))}.",
    ]


# ---- VQA (question, answer, answer_type) ---------------------------------------------------------

def vqa_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    questions = []
    shape = SHAPES[rng.integers(len(SHAPES))]
    questions.append((f"how many {shape}s are there?", str(scene.count(shape)), "number"))
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    questions.append((f"how many {colour} shapes are there?", str(scene.count(colour=colour)), "number"))
    unique_shapes = [s for s in SHAPES if scene.count(s) == 1]
    if unique_shapes:
        s = unique_shapes[rng.integers(len(unique_shapes))]
        colour_of = next(o.colour for o in scene.objects if o.shape == s)
        questions.append((f"what colour is the {s}?", colour_of, "other"))
    if rng.random() < 0.5:
        obj = scene.objects[rng.integers(len(scene.objects))]
        asked = (obj.colour, obj.shape)
    else:
        asked = (list(COLOURS)[rng.integers(len(COLOURS))], SHAPES[rng.integers(len(SHAPES))])
    questions.append((f"is there a {asked[0]} {asked[1]}?",
                      "yes" if scene.has(asked[1], asked[0]) else "no", "yes/no"))
    obj = scene.objects[rng.integers(len(scene.objects))]
    questions.append((f"what shape is in the {obj.place}?", obj.shape, "other"))
    return questions


def wrong_answer(answer: str, answer_type: str, rng: np.random.Generator) -> str:
    if answer_type == "yes/no":
        return "no" if answer == "yes" else "yes"
    if answer_type == "number":
        return str(max(0, int(answer) + int(rng.choice([-1, 1]))))
    pool = [a for a in (*COLOURS, *SHAPES) if a != answer]
    return pool[rng.integers(len(pool))]


def annotator_answers(answer: str, answer_type: str, rng: np.random.Generator,
                      n: int = 10, error_rate: float = 0.1) -> list[str]:
    """Ten human-like answers: mostly right, a few noisy ones, so soft scores vary as in VQAv2."""
    return [wrong_answer(answer, answer_type, rng) if rng.random() < error_rate else answer
            for _ in range(n)]


# ---- NLVR2 statements about an image pair -------------------------------------------------------

def nlvr2_statement(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    kind = int(rng.integers(4))
    want_true = bool(rng.random() < 0.5)
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    if kind == 0:
        true_n = left.count(shape) + right.count(shape)
        n = true_n if want_true else max(0, true_n + int(rng.choice([-1, 1])))
        return f"there are {NUMBER_WORDS[n]} {shape}s in total.", n == true_n
    if kind == 1:
        return f"both images contain a {shape}.", left.has(shape) and right.has(shape)
    if kind == 2:
        side, scene = ("left", left) if rng.random() < 0.5 else ("right", right)
        return f"the {side} image contains a {colour} shape.", scene.has(colour=colour)
    more, fewer = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    counts = {"left": len(left.objects), "right": len(right.objects)}
    return f"the {more} image has more shapes than the {fewer} image.", counts[more] > counts[fewer]


# ---- SNLI-VE hypotheses (one per label) ---------------------------------------------------------

def entailment_hypotheses(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    obj = scene.objects[rng.integers(len(scene.objects))]
    n = len(scene.objects)
    absent = [(c, s) for c in COLOURS for s in SHAPES if not scene.has(s, c)]
    c, s = absent[rng.integers(len(absent))]
    wrong_n = n + 1 if n < MAX_OBJECTS and rng.random() < 0.5 else max(1, n - 1) if n > 1 else n + 1
    entailment = (f"there is a {obj.colour} {obj.shape}." if rng.random() < 0.5 else
                  f"the picture contains {NUMBER_WORDS[n]} {_plural('shape', n)}.")
    contradiction = (f"there is a {c} {s}." if rng.random() < 0.5 else
                     f"the picture contains {NUMBER_WORDS[wrong_n]} {_plural('shape', wrong_n)}.")
    neutral = (f"the {obj.colour} {obj.shape} was drawn by a child." if rng.random() < 0.5 else
               f"the {obj.shape} is made of wood.")
    return [(entailment, "entailment"), (contradiction, "contradiction"), (neutral, "neutral")]
