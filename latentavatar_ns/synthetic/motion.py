"""A synthetic performance over time: smooth head motion and natural expression sequences.

Both are functions of a seed alone, so a dataset's performance is reproducible; the detailed
datasets draw from a wider expression repertoire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from latentavatar_ns.data.poses import axis_angle_to_matrix, matrix_to_axis_angle
from latentavatar_ns.synthetic.head import HEAD_SCALE, Expression
from latentavatar_ns.synthetic.primitives import _smoothstep


def sample_motion(num_frames: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Smooth head motion: (poses (N, 6) axis-angle + translation, scales (N,)).

    Yaw, pitch and roll are sums of two sines with random periods and phases, bounded by 25, 12
    and 8 degrees; translation moves a few percent of the frame and the scale breathes by 3%.
    """
    rng = np.random.default_rng([seed, 1])
    t = np.arange(num_frames, dtype=np.float64)

    def wave(amplitude: float, shortest: float, longest: float) -> np.ndarray:
        periods = rng.uniform(shortest, longest, 2)
        phases = rng.uniform(0.0, 2.0 * np.pi, 2)
        mix = rng.uniform(0.55, 0.8)
        return amplitude * (mix * np.sin(2.0 * np.pi * t / periods[0] + phases[0])
                            + (1.0 - mix) * np.sin(2.0 * np.pi * t / periods[1] + phases[1]))

    yaw, pitch, roll = wave(np.radians(25.0), 50, 130), wave(np.radians(12.0), 40, 110), wave(np.radians(8.0), 60, 150)
    lift = HEAD_SCALE * 0.13  # centres hair top (y ~ 1.45) to neck bottom (y = -1.72) in the frame
    translation = np.stack([wave(0.008, 70, 160), lift + wave(0.006, 70, 160), wave(0.02, 70, 160)], axis=1)
    scales = HEAD_SCALE * (1.0 + wave(0.03, 80, 200))
    poses = np.zeros((num_frames, 6))
    for i in range(num_frames):
        rot = axis_angle_to_matrix([0.0, yaw[i], 0.0]) @ axis_angle_to_matrix([pitch[i], 0.0, 0.0]) \
            @ axis_angle_to_matrix([0.0, 0.0, roll[i]])
        poses[i, :3] = matrix_to_axis_angle(rot)
    poses[:, 3:] = translation
    return poses, scales


def _segments(num_frames: int, rng: np.random.Generator, start: np.ndarray,
              draw: Callable[[np.random.Generator], List[Tuple[np.ndarray, int, int]]]) -> np.ndarray:
    """A curve that eases (smoothstep over ``ramp`` frames) to each drawn value and holds it ``hold`` frames."""
    out = np.empty((num_frames, start.size))
    value, i = start.astype(np.float64), 0
    while i < num_frames:
        for target, ramp, hold in draw(rng):
            w = _smoothstep(0.0, 1.0, (np.arange(1, ramp + 1) / ramp))[:, None]
            block = np.concatenate([value + (target - value) * w, np.repeat(target[None], hold, axis=0)])
            take = min(len(block), num_frames - i)
            out[i:i + take] = block[:take]
            i += take
            value = target
            if i >= num_frames:
                break
    return out


@dataclass(frozen=True)
class _Repertoire:
    """How often and how far a sampled performance goes: the odds and ranges the draws below use."""

    jaw_modes: Tuple[float, float, float] = (0.35, 0.5, 0.15)
    """Chances of a silent, a talking and a wide-open phase."""
    talk_open: Tuple[float, float] = (0.25, 0.65)
    wide_open: Tuple[float, float] = (0.75, 1.0)
    smile_rest: float = 0.45
    """Chance that a smile phase is no smile."""
    smile_range: Tuple[float, float] = (0.3, 1.0)
    brow_rest: float = 0.6
    brow_range: Tuple[float, float] = (0.3, 1.0)
    gaze_centre: float = 0.4
    """Chance that a fixation is near the centre."""
    gaze_range: Tuple[float, float] = (0.85, 0.6)
    """Largest |gaze_x| and |gaze_y| of a fixation."""
    blink_gap: Tuple[int, int] = (25, 80)
    wink: float = 0.12
    """Chance that a blink closes one eye only."""
    wink_hold: Optional[Tuple[int, int]] = None
    """Frames a wink stays shut (None: it is as quick as a blink)."""
    first_wink: bool = False
    """Make the first blink a wink, so that even a short sequence has one."""


_NATURAL = _Repertoire()
_WIDE = _Repertoire(jaw_modes=(0.25, 0.45, 0.3), talk_open=(0.3, 0.85), wide_open=(0.85, 1.0), smile_rest=0.35,
                    smile_range=(0.4, 1.0), brow_rest=0.4, brow_range=(0.4, 1.0), gaze_centre=0.2,
                    gaze_range=(1.0, 0.85), blink_gap=(18, 55), wink=0.5, wink_hold=(2, 8), first_wink=True)
"""The detailed datasets' repertoire: wider mouth, brows and gaze, and frequent held winks, every
value still inside the clipping ranges of :class:`Expression` (what the geometry supports)."""


def _draw_jaw(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    mode = rng.choice(3, p=rep.jaw_modes)
    if mode == 0:  # silent
        return [(np.array([rng.uniform(0.0, 0.05)]), int(rng.integers(3, 7)), int(rng.integers(6, 25)))]
    if mode == 1:  # talking: syllables alternating open and nearly closed
        steps = []
        for _ in range(int(rng.integers(2, 6))):
            steps.append((np.array([rng.uniform(*rep.talk_open)]), int(rng.integers(2, 4)), int(rng.integers(0, 3))))
            steps.append((np.array([rng.uniform(0.0, 0.15)]), int(rng.integers(2, 4)), int(rng.integers(0, 3))))
        return steps
    return [(np.array([rng.uniform(*rep.wide_open)]), int(rng.integers(4, 8)),
             int(rng.integers(6, 16)))]  # wide open


def _draw_smile(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    value = 0.0 if rng.uniform() < rep.smile_rest else rng.uniform(*rep.smile_range)
    return [(np.array([value]), int(rng.integers(6, 13)), int(rng.integers(10, 45)))]


def _draw_brow(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    value = 0.0 if rng.uniform() < rep.brow_rest else rng.uniform(*rep.brow_range)
    return [(np.array([value]), int(rng.integers(4, 9)), int(rng.integers(8, 30)))]


def _draw_gaze(rng: np.random.Generator, rep: _Repertoire) -> List[Tuple[np.ndarray, int, int]]:
    spread = 0.15 if rng.uniform() < rep.gaze_centre else 1.0  # often back near the centre
    reach_x, reach_y = rep.gaze_range
    target = np.array([rng.uniform(-reach_x, reach_x), rng.uniform(-reach_y, reach_y)]) * spread
    return [(target, 2, int(rng.integers(8, 40)))]  # saccade, then fixation


def _blinks(num_frames: int, rng: np.random.Generator, rep: _Repertoire) -> np.ndarray:
    """(N, 2) lid closure (right, left): short blinks of both eyes, some winks of one."""
    blinks = np.zeros((num_frames, 2))
    frame = first = int(rng.integers(3, 30))
    while frame < num_frames:
        length = int(rng.integers(5, 9))
        profile = np.sin(np.pi * np.arange(1, length + 1) / (length + 1)) ** 1.5
        wink = rng.uniform() < rep.wink or (rep.first_wink and frame == first)
        eyes = [int(rng.integers(2))] if wink else [0, 1]
        if len(eyes) == 1 and rep.wink_hold is not None:  # a held wink: shut at the middle of the blink
            middle = length // 2
            hold = np.full(int(rng.integers(*rep.wink_hold)), profile.max())
            profile = np.concatenate([profile[:middle], hold, profile[middle:]])
            length = profile.size
        take = min(length, num_frames - frame)
        blinks[frame:frame + take, eyes] = np.maximum(blinks[frame:frame + take, eyes], profile[:take, None])
        frame += length + int(rng.integers(*rep.blink_gap))
    return blinks


def sample_expressions(num_frames: int, seed: int, detail: bool = False) -> List[Expression]:
    """Smooth, natural expression sequences: short blinks (sometimes a wink), talking and wide-open
    mouth phases, smiles, raised brows (also when the mouth opens wide) and saccadic gaze.

    ``detail`` samples the wider repertoire of detailed datasets (an expressiveness benchmark needs
    the extremes): more and wider mouth opening, bigger smiles, brows and gaze, and frequent winks
    held shut for a few frames. Without it the sequences are exactly the natural ones.
    """
    rep = _WIDE if detail else _NATURAL
    rng = np.random.default_rng([seed, 2])

    def draw(fn: Callable[[np.random.Generator, _Repertoire], List[Tuple[np.ndarray, int, int]]]):
        return lambda generator: fn(generator, rep)

    jaw = _segments(num_frames, rng, np.zeros(1), draw(_draw_jaw))[:, 0]
    smile = _segments(num_frames, rng, np.zeros(1), draw(_draw_smile))[:, 0]
    brow = np.maximum(_segments(num_frames, rng, np.zeros(1), draw(_draw_brow))[:, 0],
                      0.9 * _smoothstep(0.6, 0.9, jaw))
    gaze = _segments(num_frames, rng, np.zeros(2), draw(_draw_gaze))
    blinks = _blinks(num_frames, rng, rep)
    values = np.stack([jaw, smile, blinks[:, 0], blinks[:, 1], brow, gaze[:, 0], gaze[:, 1]], axis=1)
    return [Expression.from_array(row) for row in np.round(values, 6)]
