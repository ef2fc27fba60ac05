"""Frames of the native envs, drawn on the host with Pillow (no renderer, no GPU).

* `planar_frames`: the arena `[-1, 1]^2` seen from above (walls as segments, the goal's
  success disc, the agent, its trail), and optionally the plan in force at each step drawn
  two ways: the planned actions stepped through the true dynamics (orange line) and the
  world model's imagined latents placed by the nearest-neighbour probe (blue dots);
* `pendulum_frames`: the pendulum's rod at each angle (0 = upright);
* `label_frames`: a line of text on each frame (MuJoCo's frames too).

Every function returns `[T, S, S, 3]` uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 256
BACKGROUND, WALL, TRAIL = (250, 250, 246), (60, 60, 60), (150, 150, 150)
AGENT, GOAL, TRUE_PLAN, IMAGINED = (200, 30, 30), (40, 160, 60), (240, 140, 20), (30, 90, 220)
Segment = tuple[tuple[float, float], tuple[float, float]]


def to_pixels(xy: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Arena coordinates `[..., 2]` (x right, y up, in [-1, 1]) to pixel coordinates `[..., 2]`."""
    xy = np.asarray(xy, np.float64)
    return np.stack([(xy[..., 0] + 1.0) * 0.5 * (size - 1), (1.0 - xy[..., 1]) * 0.5 * (size - 1)], axis=-1)


def two_rooms_walls(door_y: float, door_width: float) -> list[Segment]:
    """The wall on x = 0 as two segments, leaving the door `|y - door_y| < door_width / 2` open."""
    lo, hi = door_y - 0.5 * door_width, door_y + 0.5 * door_width
    return [((0.0, -1.0), (0.0, lo)), ((0.0, hi), (0.0, 1.0))]


def _font():
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _disc(draw: ImageDraw.ImageDraw, centre: np.ndarray, radius: float, **style) -> None:
    x, y = centre
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], **style)


def _line(draw: ImageDraw.ImageDraw, points: np.ndarray, color, width: int) -> None:
    if len(points) >= 2:
        draw.line([tuple(p) for p in points], fill=color, width=width, joint="curve")


def planar_frames(
    positions: np.ndarray,
    goal: np.ndarray,
    *,
    success_radius: float,
    walls: Sequence[Segment] = (),
    true_plan: np.ndarray | None = None,
    imagined: np.ndarray | None = None,
    plan_valid: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    size: int = SIZE,
) -> np.ndarray:
    """Frames `[T + 1, S, S, 3]` of one episode.

    Args:
      positions: `[T + 1, 2]` the agent's positions (the start included).
      goal: `[2]` the goal position.
      success_radius: the goal disc's radius (arena units).
      walls: segments drawn as walls.
      true_plan: `[T, H, 2]` positions along the plan in force at each step, on the true dynamics.
      imagined: `[T, H, 2]` the probe's positions of the imagined latents of the same plan.
      plan_valid: `[T, H]` the real (unpadded) steps of each plan.
      labels: `T + 1` texts written in the top-left corner.
    """
    positions = to_pixels(positions, size)
    goal_px, radius = to_pixels(goal, size), success_radius * 0.5 * (size - 1)
    font = _font()
    frames = []
    for t in range(len(positions)):
        image = Image.new("RGB", (size, size), BACKGROUND)
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, 0, size - 1, size - 1], outline=WALL, width=2)
        for a, b in walls:
            _line(draw, to_pixels(np.array([a, b]), size), WALL, 4)
        _disc(draw, goal_px, radius, fill=(205, 235, 205), outline=GOAL, width=2)
        _line(draw, positions[: t + 1], TRAIL, 2)
        if t < len(positions) - 1:
            keep = slice(None) if plan_valid is None else np.asarray(plan_valid[t], bool)
            if true_plan is not None:
                path = np.concatenate([positions[t : t + 1], to_pixels(true_plan[t][keep], size)])
                _line(draw, path, TRUE_PLAN, 3)
            if imagined is not None:
                for p in to_pixels(imagined[t][keep], size):
                    _disc(draw, p, 2.5, fill=IMAGINED)
        _disc(draw, positions[t], 5.0, fill=AGENT)
        if labels is not None:
            _label(draw, labels[t], font)
        frames.append(np.asarray(image))
    return np.stack(frames)


def _label(draw: ImageDraw.ImageDraw, text: str, font) -> None:
    """`text` on a white box in the top-left corner."""
    draw.rectangle([2, 2, 10 + int(draw.textlength(text, font=font)), 20], fill=(255, 255, 255))
    draw.text((6, 4), text, fill=(20, 20, 20), font=font)


def label_frames(frames: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """`frames [T, H, W, 3]` uint8 with `labels[t]` written in the top-left corner of frame `t`."""
    font, out = _font(), []
    for frame, text in zip(frames, labels, strict=True):
        image = Image.fromarray(np.asarray(frame, np.uint8))
        _label(ImageDraw.Draw(image), text, font)
        out.append(np.asarray(image))
    return np.stack(out)


def pendulum_frames(theta: np.ndarray, labels: Sequence[str] | None = None, size: int = SIZE) -> np.ndarray:
    """Frames `[T, S, S, 3]` of a pendulum at angles `theta [T]` (0 = upright, radians)."""
    font, centre = _font(), np.array([size / 2, size / 2])
    length = 0.38 * size
    frames = []
    for t, angle in enumerate(np.asarray(theta, np.float64)):
        image = Image.new("RGB", (size, size), BACKGROUND)
        draw = ImageDraw.Draw(image)
        tip = centre + length * np.array([np.sin(angle), -np.cos(angle)])
        _disc(draw, centre, length, outline=(220, 220, 220), width=1)
        draw.line([tuple(centre), tuple(tip)], fill=WALL, width=6)
        _disc(draw, tip, 10.0, fill=AGENT)
        _disc(draw, centre, 4.0, fill=WALL)
        if labels is not None:
            _label(draw, labels[t], font)
        frames.append(np.asarray(image))
    return np.stack(frames)
