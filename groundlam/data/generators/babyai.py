"""BabyAI demonstrations: minigrid's ``BabyAIBot`` solving a level, rendered from above.

Dimension keys:
    T  frames of an episode (T - 1 actions)
    H  height, W width (pixels, both ``image_size``)

Needs the optional extra ``groundlam[babyai]`` (the ``minigrid`` package, Apache-2.0). Frames are
drawn with minigrid's software tile renderer (no OpenGL, no window); ``view`` picks which cells:
``"full"`` the whole grid, ``"room"`` the room the agent is in (the level's grid cropped to it,
north up: on a 3 x 3-room level such as GoTo, 8 x 8 of its 22 x 22 cells), ``"agent"`` minigrid's
egocentric partial view (7 x 7 cells: the agent's row and six ahead, three to each side, rotated
so that it faces up, cells hidden behind walls empty; the agent stays in the bottom-centre cell).

Episode ``index`` of a config is a pure function of ``(seed, index)``: the level is reset with a
seed drawn from that pair, the bot plays until the mission is done, and an episode with fewer
than ``min_frames`` or more than ``max_frames`` frames is rejected and the level is reset with the
next seed of the episode's own sequence (``max_attempts`` in all). The label is the mission string
("put the blue key next to the grey key"); the actions are minigrid's discrete actions (0 left,
1 right, 2 forward, 3 pickup, 4 drop, 5 toggle); ``agent_mask`` covers the agent's cell and the
cells of the objects the mission names (all objects matching a description like "a green ball")
that are in view. ``view`` changes only the pixels and the masks: the demonstrations, missions
and actions of a config do not depend on it.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from dataclasses import dataclass, field

import datasets
import numpy as np

from groundlam.data.generators.common import (
    DISTRACTOR_STREAM,
    LOOKALIKE_STREAM,
    SCENE_STREAM,
    Closing,
    apply_distractors,
    clean_parameters,
)
from groundlam.data.synthetic import Distractors, episode_features

__all__ = ["ACTIONS", "VIEWS", "BabyAIConfig", "BabyAIGenerator", "babyai_features"]

ACTIONS: tuple[str, ...] = ("left", "right", "forward", "pickup", "drop", "toggle")
# minigrid's DIR_TO_VEC: the (dx, dy) of a step forward facing east, south, west, north
DIR_TO_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))
VIEWS: tuple[str, ...] = ("full", "room", "agent")
INSTRUCTION_PARTS = ("desc", "desc_move", "desc_fixed", "instr_a", "instr_b")


@dataclass
class BabyAIConfig:
    """Which BabyAI level, how many episodes, how big, which seed, which distractors."""

    level: str = "BabyAI-PutNextLocal-v0"  # a registered minigrid BabyAI level id
    num_episodes: int = 100
    image_size: int = 64  # pixels per side; the view is drawn at ceil(size / cells) px per cell
    # the agent's "room" (default: GoTo's full grid at 64 px leaves every probe at chance, see
    # data_cards/babyai.md), the "full" grid, or the "agent"'s egocentric 7 x 7 view
    view: str = "room"
    seed: int = 0
    min_frames: int = 8  # shorter demonstrations are re-drawn (GoToLocal is often 2-4 frames)
    max_frames: int = 64  # longer demonstrations are re-drawn
    max_attempts: int = 50  # resets per episode before giving up with an error
    distractors: Distractors = field(default_factory=Distractors)

    def __post_init__(self) -> None:
        if isinstance(self.distractors, dict):
            self.distractors = Distractors(**self.distractors)
        if self.num_episodes < 0:
            raise ValueError(f"BabyAIConfig.num_episodes must be >= 0, got {self.num_episodes}")
        if self.view not in VIEWS:
            raise ValueError(f"BabyAIConfig.view must be one of {VIEWS}, got {self.view!r}")
        if self.image_size < 16:
            raise ValueError(f"BabyAIConfig.image_size must be >= 16, got {self.image_size}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise ValueError(f"BabyAIConfig needs 2 <= min_frames <= max_frames, got "
                             f"{self.min_frames} and {self.max_frames}")
        if self.seed < 0:
            raise ValueError(f"BabyAIConfig.seed must be >= 0, got {self.seed}")
        if self.max_attempts < 1:
            raise ValueError(f"BabyAIConfig.max_attempts must be >= 1, got {self.max_attempts}")


def babyai_features(image_size: int) -> datasets.Features:
    """The ``datasets`` schema of a BabyAI episode row (T is free): the synthetic benchmark's
    columns, plus the distractor sprites' positions and the level id."""
    return datasets.Features({
        **episode_features(image_size),
        "sprite_positions": datasets.List(datasets.List(datasets.Value("float32"))),
        "level": datasets.Value("string"),
    })


def _import_minigrid():
    try:
        import gymnasium
        import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)
        from minigrid.utils.baby_ai_bot import BabyAIBot
    except ImportError as error:
        raise ImportError("the BabyAI generator needs minigrid: pip install 'groundlam[babyai]'"
                          ) from error
    return gymnasium, BabyAIBot


def _mission_objects(instruction) -> list:
    """Every object a (possibly compound) BabyAI instruction names."""
    objects = []
    for part in INSTRUCTION_PARTS:
        child = getattr(instruction, part, None)
        if child is None:
            continue
        if hasattr(child, "obj_set"):  # an ObjDesc
            objects.extend(child.obj_set)
        else:  # a sub-instruction of "and" / "before" / "after"
            objects.extend(_mission_objects(child))
    return objects


def _nearest_indices(source: int, target: int) -> np.ndarray:
    """Source pixel of each target pixel when resizing ``source`` px to ``target`` px."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


class BabyAIGenerator(Closing):
    """Renders the episodes of one ``BabyAIConfig``; keeps one environment for all of them.

    >>> generator = BabyAIGenerator(BabyAIConfig(num_episodes=2))
    >>> clean, distracted = generator.pair(0)   # same actions and label, other pixels
    """

    def __init__(self, config: BabyAIConfig) -> None:
        self.config = config
        gymnasium, self._bot_class = _import_minigrid()
        try:
            self.env = gymnasium.make(config.level)
        except gymnasium.error.Error as error:
            raise ValueError(f"BabyAIConfig.level={config.level!r} is not a registered minigrid "
                             f"level ({error})") from error
        self.view_cells = self._view_cells()  # cells per side of the rendered view
        self.tile_px = math.ceil(config.image_size / self.view_cells)
        rendered_px = self.tile_px * self.view_cells
        self._pixel_to_cell = _nearest_indices(rendered_px, config.image_size) // self.tile_px
        self._tile_keys: list | None = None  # per cell, what the canvas shows there
        self._canvas = np.zeros((rendered_px, rendered_px, 3), dtype=np.uint8)
        # Demonstrations re-drawn, by reason: "shorter than min_frames", "longer than max_frames",
        # "bot failed" (an exception, a failed mission or a step limit).
        self.rejections: Counter[str] = Counter()

    def _view_cells(self) -> int:
        env, level = self.env.unwrapped, self.config.level
        if self.config.view == "agent":
            return int(env.agent_view_size)
        if self.config.view == "room":
            # minigrid's RoomGrid: rooms of room_size x room_size cells (walls included) sharing
            # their walls; every BabyAI level is one
            if not hasattr(env, "room_size") or not hasattr(env, "room_from_pos"):
                raise ValueError(f"view='room' (the default): {level} is not a minigrid "
                                 "RoomGrid level; draw it with view='full' (--view full)")
            return int(env.room_size)
        if env.height != env.width:
            raise ValueError(f"{level}: the grid is not square ({env.width}x{env.height})")
        return int(env.width)

    def features(self) -> datasets.Features:
        return babyai_features(self.config.image_size)

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------------------ simulation

    def _reset(self, reset_seed: int) -> str:
        self._tile_keys = None  # a new level: redraw every tile
        # minigrid prints every rejected level layout ("Sampling rejected: ...") to stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            observation, _ = self.env.reset(seed=reset_seed)
        return observation["mission"]

    def _plan(self, reset_seed: int) -> tuple[list[int], str]:
        """The bot's actions on the level drawn with ``reset_seed`` and why they are rejected
        ("" when accepted); nothing is rendered, so rejected attempts cost only the bot."""
        config, env = self.config, self.env.unwrapped
        self._reset(reset_seed)
        bot = self._bot_class(self.env)
        actions: list[int] = []
        try:
            while len(actions) + 1 < config.max_frames:
                action = bot.replan()
                if action == env.actions.done:
                    break
                _, reward, terminated, truncated, _ = self.env.step(action)
                actions.append(int(action))
                if terminated:  # BabyAI terminates on success (reward > 0) and on failure
                    if reward > 0:
                        break
                    return actions, "bot failed: the mission failed"
                if truncated:
                    return actions, "bot failed: the level's step limit ran out"
            else:
                return actions, f"longer than max_frames={config.max_frames}"
        except Exception as error:  # noqa: BLE001 (the bot fails on rare layouts: re-draw)
            return actions, f"bot failed: {type(error).__name__}: {error}"
        if action == env.actions.done:
            return actions, "bot failed: it stopped before the mission was verified"
        if len(actions) + 1 < config.min_frames:
            return actions, f"shorter than min_frames={config.min_frames}: {len(actions) + 1}"
        return actions, ""

    def _demonstration(self, index: int) -> tuple[str, list[int], list[np.ndarray],
                                                   list[np.ndarray], list[np.ndarray]]:
        """(mission, actions, frames, task cells (V, V), floor cells (V, V)) of a solved level,
        V = ``view_cells``.

        The bot plans first without rendering; an accepted plan is replayed from the same reset
        seed (minigrid is deterministic given it) and rendered frame by frame.
        """
        config = self.config
        seeds = np.random.SeedSequence([config.seed, index, SCENE_STREAM])
        reset_seeds = seeds.generate_state(config.max_attempts, dtype=np.uint32)
        reasons = []
        for reset_seed in reset_seeds:
            actions, reason = self._plan(int(reset_seed))
            if reason:
                reasons.append(reason)
                self.rejections[reason.partition(":")[0].partition("=")[0]] += 1
                continue
            mission = self._reset(int(reset_seed))
            targets = _mission_objects(self.env.unwrapped.instrs)
            frames, task_cells, floor_cells = [], [], []
            for action in [None, *actions]:
                if action is not None:
                    self.env.step(action)
                frame, task, floor = self._render(targets)
                frames.append(frame)
                task_cells.append(task)
                floor_cells.append(floor)
            return mission, actions, frames, task_cells, floor_cells
        raise RuntimeError(f"{config.level} episode {index} (seed {config.seed}): no demonstration "
                           f"of {config.min_frames}-{config.max_frames} frames in "
                           f"{config.max_attempts} attempts; last reasons: {reasons[-3:]}")

    def _view(self) -> tuple[list, int, int]:
        """The cells of the view, row-major (V * V objects or None), the agent's index among
        them and the direction to draw it with (0 east, 1 south, 2 west, 3 north)."""
        env, size, view = self.env.unwrapped, self.view_cells, self.config.view
        x, y = int(env.agent_pos[0]), int(env.agent_pos[1])
        if view == "full":
            return env.grid.grid, y * size + x, int(env.agent_dir)
        if view == "room":
            left, top = (int(value) for value in env.room_from_pos(x, y).top)
            cells = [env.grid.get(left + col, top + row)
                     for row in range(size) for col in range(size)]
            return cells, (y - top) * size + (x - left), int(env.agent_dir)
        # minigrid's own partial observation: hidden cells are None, a carried object lies under
        # the agent, which sits in the bottom-centre cell facing up
        grid, _ = env.gen_obs_grid()
        return grid.grid, (size - 1) * size + size // 2, 3

    def _render(self, targets: list = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The view as minigrid draws it without highlight, uint8 (Hr, Wr, 3), and which of its
        cells are the agent's or a ``targets`` object's and which are floor (empty, not the
        agent's), both bool (V, V) (rows, cols).

        ``"full"`` is ``get_frame(highlight=False)``; ``"agent"`` is ``get_pov_render`` without
        its highlight. Only the tiles that changed since the previous frame are redrawn
        (minigrid's own ``render_tile``, cached by the same key): minigrid redraws every tile of
        the grid and computes the agent's view for the highlight even when it is off, ~5 ms a
        frame at 22x22.
        """
        from minigrid.core.grid import Grid

        size, tile = self.view_cells, self.tile_px
        cells, agent, direction = self._view()
        keys = [(None if obj is None else obj.encode(), None) for obj in cells]
        keys[agent] = (keys[agent][0], direction)
        if self._tile_keys is None:
            self._canvas = np.zeros((size * tile, size * tile, 3), dtype=np.uint8)
            self._tile_keys = [()] * len(keys)
        for cell, key in enumerate(keys):
            if key == self._tile_keys[cell]:
                continue
            row, col = divmod(cell, size)
            self._canvas[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = (
                Grid.render_tile(cells[cell], agent_dir=key[1], highlight=False, tile_size=tile))
        self._tile_keys = keys
        floor = np.array([key == (None, None) for key in keys]).reshape(size, size)
        named = {id(obj) for obj in targets}  # a carried object is in no cell of "full"/"room"
        task = np.array([id(obj) in named for obj in cells]).reshape(size, size)
        task.flat[agent] = True
        return self._canvas.copy(), task, floor

    # ------------------------------------------------------------------------ rendering

    def _resize(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, Hr, Wr, 3) at the rendered size -> (T, H, W, 3) at ``image_size``."""
        size = self.config.image_size
        if frames.shape[1] != size:
            import torch

            from groundlam.video import resize_video

            frames = resize_video(torch.from_numpy(frames), size).numpy()
        return np.ascontiguousarray(frames, dtype=np.uint8)

    def _cells_to_pixels(self, cells: np.ndarray) -> np.ndarray:
        """bool (T, V, V) cells of the view -> bool (T, H, W) pixels at ``image_size``."""
        rows = self._pixel_to_cell
        return cells[:, rows][:, :, rows]

    def _clean(self, index: int) -> tuple[dict, dict]:
        """The clean row, and what the distracted rendering needs: the frames at the rendered
        size (T, Hr, Wr, 3) and the floor cells (T, V, V)."""
        mission, actions, frames, task_cells, floor_cells = self._demonstration(index)
        rendered = np.stack(frames)  # (T, Hr, Wr, 3), Hr = tile_px * view_cells
        floor = np.stack(floor_cells)  # (T, V, V)
        episode = {
            "frames": self._resize(rendered),
            "label": str(mission),
            "actions": np.asarray(actions, dtype=np.int64),
            "agent_mask": self._cells_to_pixels(np.stack(task_cells)),  # (T, H, W)
            **clean_parameters(len(frames)),
            "episode_id": f"babyai-{self.config.level}-s{self.config.seed}-{index:06d}",
            "level": self.config.level,
        }
        return episode, {"rendered": rendered, "floor": floor}

    def _lookalike_walk(self, floor: np.ndarray, count: int,
                        rng: np.random.Generator) -> np.ndarray:
        """Integer (T, L, 3) (row, col, direction) of ``count`` look-alikes; row -1 = hidden.

        Each is a second agent on a random walk over the view's floor cells: it turns left or
        right (a quarter each) or steps forward (half) when the cell ahead is floor in the next
        frame. A look-alike whose cell the agent or an object takes steps to a free neighbour
        (hidden for that frame when there is none); look-alikes never share a cell.
        """
        num_frames, size = floor.shape[:2]
        starts = rng.random(count)
        headings = rng.integers(4, size=count)
        choices = rng.choice(3, p=(0.25, 0.25, 0.5), size=(num_frames - 1, count))
        asides = rng.random((num_frames - 1, count))
        walk = np.full((num_frames, count, 3), -1, dtype=np.int64)
        free = [tuple(cell) for cell in np.argwhere(floor[0])]
        for actor in range(count):
            free = [cell for cell in free if cell not in {tuple(w[:2]) for w in walk[0, :actor]}]
            if free:
                row, col = free[int(starts[actor] * len(free))]
                walk[0, actor] = row, col, headings[actor]
        for t in range(num_frames - 1):
            taken: set[tuple[int, int]] = set()
            for actor in range(count):
                row, col, heading = walk[t, actor]
                if row < 0:  # hidden: reappears on a free cell
                    free = [tuple(c) for c in np.argwhere(floor[t + 1]) if tuple(c) not in taken]
                    if free:
                        row, col = free[int(asides[t, actor] * len(free))]
                else:
                    if choices[t, actor] == 2:
                        dx, dy = DIR_TO_VEC[heading]
                        ahead = (row + dy, col + dx)
                        if (0 <= ahead[0] < size and 0 <= ahead[1] < size
                                and floor[t + 1][ahead] and ahead not in taken):
                            row, col = ahead
                    else:  # 0 left, 1 right, as minigrid's actions
                        heading = (heading + (1 if choices[t, actor] else -1)) % 4
                    if not floor[t + 1][row, col] or (row, col) in taken:
                        aside = [(direction, (row + dy, col + dx))
                                 for direction, (dx, dy) in enumerate(DIR_TO_VEC)
                                 if 0 <= row + dy < size and 0 <= col + dx < size
                                 and floor[t + 1][row + dy, col + dx]
                                 and (row + dy, col + dx) not in taken]
                        if aside:
                            heading, (row, col) = aside[int(asides[t, actor] * len(aside))]
                        else:
                            row = col = -1
                if row >= 0:
                    taken.add((row, col))
                    walk[t + 1, actor] = row, col, heading
        return walk

    def _draw_lookalikes(self, rendered: np.ndarray, walk: np.ndarray) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
        """Frames (T, Hr, Wr, 3) with the look-alikes drawn as minigrid draws the agent (on
        floor), and the cells they cover, bool (T, V, V)."""
        from minigrid.core.grid import Grid

        tile = self.tile_px
        frames = rendered.copy()
        cells = np.zeros((walk.shape[0], self.view_cells, self.view_cells), dtype=bool)
        for t, actor in zip(*np.nonzero(walk[..., 0] >= 0), strict=True):
            row, col, heading = walk[t, actor]
            frames[t, row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = (
                Grid.render_tile(None, agent_dir=int(heading), highlight=False, tile_size=tile))
            cells[t, row, col] = True
        return frames, cells

    def _distract(self, clean: dict, scene: dict, index: int) -> dict:
        config = self.config
        frames, floor, lookalike = clean["frames"], scene["floor"], None
        if config.distractors.lookalikes:
            rng = np.random.default_rng([config.seed, index, LOOKALIKE_STREAM])
            walk = self._lookalike_walk(floor, config.distractors.lookalikes, rng)
            drawn, cells = self._draw_lookalikes(scene["rendered"], walk)
            frames, floor = self._resize(drawn), floor & ~cells
            lookalike = self._cells_to_pixels(cells)
        rng = np.random.default_rng([config.seed, index, DISTRACTOR_STREAM])
        rendered = apply_distractors(frames, clean["agent_mask"], config.distractors, rng,
                                     self._cells_to_pixels(floor), foreground_mask=lookalike)
        return {**clean, **rendered, "actions": clean["actions"].copy()}

    def episode(self, index: int, distracted: bool = True) -> dict:
        """Episode ``index`` as one dataset row (numpy arrays and strings)."""
        clean, scene = self._clean(index)
        return self._distract(clean, scene, index) if distracted else clean

    def pair(self, index: int) -> tuple[dict, dict]:
        """(clean, distracted) renderings of episode ``index``: one demonstration, two looks."""
        clean, scene = self._clean(index)
        return clean, self._distract(clean, scene, index)
