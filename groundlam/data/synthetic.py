"""The built-in benchmark: a procedural 2-D grid world with language-labelled episodes.

Dimension keys:
    T  frames of an episode (``episode_length``); there are T - 1 actions
    H  height, W width (pixels, both ``image_size``)
    K  objects in a scene (3 or 4)
    G  cells per side of the grid (8)

An agent moves on a G x G grid one cell per discrete action, pushes objects it walks into and
can grab an adjacent object to carry it. A scripted expert does a task named by a templated
language label ("push the blue circle to the left"), with epsilon-random actions mixed in, and
keeps showing it once it is done (circling, pushing on, carrying), so any clip of an episode
shows the label. The target is one of several objects, so the label cannot be read from a still
frame: only the motion tells which object the agent goes to.

Every episode is a pure function of ``(config.seed, index)``. The state trajectory is simulated
first from one RNG stream, then rendered with distractor randomness from a second stream, so the
same episode can be rendered clean and distracted with identical actions, labels and masks (the
masks up to the camera offset).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import datasets
import numpy as np

__all__ = [
    "ACTIONS",
    "EPISODE_FEATURES",
    "MAX_LOOKALIKES",
    "NUM_LABEL_TEMPLATES",
    "STRENGTH_SWITCHES",
    "Distractors",
    "SyntheticConfig",
    "WorldTrajectory",
    "all_labels",
    # the distractors' pieces, shared with the other generators (generators/common.py)
    "apply_color_jitter",
    "background_strip",
    "camera_offsets",
    "shape_masks",
    "sprite_positions",
    "stamp_shape",
    "episode_features",
    "generate_dataset",
    "generate_episode",
    "generate_pair",
    "iter_episodes",
    "simulate",
    "step_world",
]

ACTIONS: tuple[str, ...] = ("noop", "up", "down", "left", "right", "grab")
GRID_CELLS = 8
NOOP = ACTIONS.index("noop")
GRAB = ACTIONS.index("grab")
# (row, col) change of each action; noop and grab do not move.
ACTION_DELTAS: dict[int, tuple[int, int]] = {
    ACTIONS.index("up"): (-1, 0),
    ACTIONS.index("down"): (1, 0),
    ACTIONS.index("left"): (0, -1),
    ACTIONS.index("right"): (0, 1),
}
MOVE_ACTIONS = tuple(ACTION_DELTAS)
DELTA_ACTIONS = {delta: action for action, delta in ACTION_DELTAS.items()}
# The 8 cells around a target, clockwise; consecutive cells are one move apart, so stepping along
# this ring circles the target without ever walking into it.
RING_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 30),
    "purple": (150, 60, 200),
    "cyan": (40, 210, 220),
    "orange": (240, 130, 20),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross", "diamond")
AGENT_COLOR = (255, 255, 255)
# Yellow-white while carrying, so a grab is visible in the pixels and not only in the state.
AGENT_HOLDING_COLOR = (255, 240, 160)
AGENT_CENTRE_COLOR = (30, 30, 30)
FLOOR_COLOR = (36, 36, 44)
GRID_LINE_COLOR = (52, 52, 62)
OUTSIDE_WORLD_COLOR = (0, 0, 0)

MOVE_TEMPLATES = (
    "move to the {object}",
    "go to the {object}",
    "walk over to the {object}",
    "approach the {object}",
)
PUSH_TEMPLATES = (
    "push the {object} {direction_phrase}",
    "shove the {object} {direction}",
    "slide the {object} {direction_phrase}",
)
PICK_UP_TEMPLATES = ("pick up the {object}", "grab the {object}", "take the {object}")
NUM_LABEL_TEMPLATES = len(MOVE_TEMPLATES) + len(PUSH_TEMPLATES) + len(PICK_UP_TEMPLATES)
DIRECTION_PHRASES = {
    "up": "upwards",
    "down": "downwards",
    "left": "to the left",
    "right": "to the right",
}
TASKS = ("move_to", "push", "pick_up")
PUSH_DISTANCE = 2  # cells the target must travel for a push task to count as done
MIN_START_DISTANCE = 4  # cells (Manhattan) between the agent's start and the target
EXPERT_EPSILON = 0.2  # share of steps where the expert takes a uniformly random action
HOVER_NOOP_PROBABILITY = 0.2  # share of hovering steps where the agent waits beside the target
NUDGE_PROBABILITY = 0.5  # share of blocked-push steps spent bumping the target, not stepping aside
CARRY_KEEP_HEADING = 0.7  # chance a carrying agent keeps walking the way it went the step before

SCENE_STREAM, DISTRACTOR_STREAM = 0, 1


# The switches of ``Distractors`` that are strengths in [0, 1]; ``lookalikes`` is a count.
STRENGTH_SWITCHES = ("camera_shake", "background", "sprites", "color_jitter")
MAX_LOOKALIKES = 3


@dataclass
class Distractors:
    """Task-irrelevant motion: four strengths in [0, 1] (0 = off) and a count of look-alikes."""

    camera_shake: float = 0.0  # whole-frame translation, up to round(4 * s * image_size / 64) px
    background: float = 0.0  # scrolling stripe texture, amplitude grows with s
    sprites: float = 0.0  # 1 + round(3 * s) sprites moving on their own, faster with s
    color_jitter: float = 0.0  # per-frame brightness / contrast / hue shift
    # actors drawn exactly like the agent, each walking to an object the label does not name
    lookalikes: int = 0

    def __post_init__(self) -> None:
        for name in STRENGTH_SWITCHES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Distractors.{name} must be in [0, 1], got {value}")
        count = self.lookalikes
        if count != int(count) or not 0 <= count <= MAX_LOOKALIKES:
            raise ValueError(f"Distractors.lookalikes must be a whole number of actors in "
                             f"0..{MAX_LOOKALIKES}, got {count}")
        self.lookalikes = int(count)

    @classmethod
    def all(cls, strength: float = 1.0, lookalikes: int = 0) -> Distractors:
        """The four strength switches on at the same strength (and ``lookalikes`` actors)."""
        return cls(strength, strength, strength, strength, lookalikes)


@dataclass
class SyntheticConfig:
    """What to generate: how many episodes, how long, how big, which seed, which distractors."""

    num_episodes: int = 1000
    episode_length: int = 24  # frames per episode (episode_length - 1 actions)
    image_size: int = 64  # pixels per side, a multiple of 8 (the grid), at least 32
    seed: int = 0  # every episode is a pure function of (seed, index)
    distractors: Distractors = field(default_factory=Distractors)

    def __post_init__(self) -> None:
        if isinstance(self.distractors, dict):  # e.g. loaded from YAML
            self.distractors = Distractors(**self.distractors)
        if self.num_episodes < 0:
            raise ValueError(f"SyntheticConfig.num_episodes must be >= 0, got {self.num_episodes}")
        if self.episode_length < 2:
            raise ValueError(
                f"SyntheticConfig.episode_length must be >= 2 (one action), "
                f"got {self.episode_length}"
            )
        if self.image_size < 32 or self.image_size % GRID_CELLS:
            raise ValueError(
                f"SyntheticConfig.image_size must be a multiple of {GRID_CELLS} and >= 32, "
                f"got {self.image_size}"
            )
        if self.seed < 0:
            raise ValueError(f"SyntheticConfig.seed must be >= 0, got {self.seed}")


@dataclass
class WorldTrajectory:
    """The simulated state of one episode, before any rendering. Cells are (row, col)."""

    agent_cells: np.ndarray  # int64 (T, 2)
    object_cells: np.ndarray  # int64 (T, K, 2)
    held_object: np.ndarray  # int64 (T,), index of the carried object or -1
    actions: np.ndarray  # int64 (T-1,), indices into ACTIONS
    object_colors: tuple[str, ...]  # K colour names
    object_shapes: tuple[str, ...]  # K shape names
    target_object: int  # index of the object the label is about
    task: str  # one of TASKS
    label: str
    done_frame: int  # first frame at which the task is done, -1 if never


# ----------------------------------------------------------------------------- labels


def _object_name(color: str, shape: str) -> str:
    return f"{color} {shape}"


def _task_labels(task: str, object_name: str, direction: str | None = None) -> list[str]:
    """Every paraphrase of one task about one object."""
    if task == "move_to":
        return [template.format(object=object_name) for template in MOVE_TEMPLATES]
    if task == "pick_up":
        return [template.format(object=object_name) for template in PICK_UP_TEMPLATES]
    assert direction is not None
    return [
        template.format(
            object=object_name,
            direction=direction,
            direction_phrase=DIRECTION_PHRASES[direction],
        )
        for template in PUSH_TEMPLATES
    ]


@lru_cache(maxsize=1)
def all_labels() -> tuple[str, ...]:
    """Every label string the generator can produce, sorted (for retrieval evaluations)."""
    labels: set[str] = set()
    for color in COLORS:
        for shape in SHAPES:
            name = _object_name(color, shape)
            labels.update(_task_labels("move_to", name))
            labels.update(_task_labels("pick_up", name))
            for direction in DIRECTION_PHRASES:
                labels.update(_task_labels("push", name, direction))
    return tuple(sorted(labels))


# ----------------------------------------------------------------------------- world dynamics


def _inside(cell: tuple[int, int]) -> bool:
    return 0 <= cell[0] < GRID_CELLS and 0 <= cell[1] < GRID_CELLS


def _grab_candidate(agent: tuple[int, int], objects: list[tuple[int, int]]) -> int:
    """The object a grab would pick up: the first neighbour in up, down, left, right order."""
    for delta_row, delta_col in ACTION_DELTAS.values():
        neighbour = (agent[0] + delta_row, agent[1] + delta_col)
        if neighbour in objects:
            return objects.index(neighbour)
    return -1


def step_world(
    agent: tuple[int, int], objects: list[tuple[int, int]], held: int, action: int
) -> tuple[tuple[int, int], list[tuple[int, int]], int]:
    """Apply one action; returns the new (agent cell, object cells, held object index or -1).

    Moving into an object pushes it one cell if the cell behind it is free and inside the grid,
    otherwise the move is blocked. While carrying, the carried object keeps its offset to the
    agent and nothing can be pushed: the move happens only if both land on free cells. ``grab``
    drops what is carried, or picks up an adjacent object (none adjacent: nothing happens).
    """
    objects = list(objects)
    if action == GRAB:
        if held >= 0:
            return agent, objects, -1
        return agent, objects, _grab_candidate(agent, objects)
    if action not in ACTION_DELTAS:
        return agent, objects, held
    delta_row, delta_col = ACTION_DELTAS[action]
    new_agent = (agent[0] + delta_row, agent[1] + delta_col)
    if not _inside(new_agent):
        return agent, objects, held
    if held >= 0:
        new_held = (objects[held][0] + delta_row, objects[held][1] + delta_col)
        others = [cell for index, cell in enumerate(objects) if index != held]
        if not _inside(new_held) or new_agent in others or new_held in others:
            return agent, objects, held
        objects[held] = new_held
        return new_agent, objects, held
    if new_agent in objects:
        pushed = objects.index(new_agent)
        behind = (new_agent[0] + delta_row, new_agent[1] + delta_col)
        if not _inside(behind) or behind in objects:
            return agent, objects, held
        objects[pushed] = behind
    return new_agent, objects, held


def _first_move_towards(
    start: tuple[int, int], goals: set[tuple[int, int]], obstacles: set[tuple[int, int]]
) -> int | None:
    """Breadth-first search on the grid; the first action of a shortest path, None if none."""
    if not goals:
        return None
    first_action: dict[tuple[int, int], int] = {start: -1}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell in goals:
            return first_action[cell]
        for action, (delta_row, delta_col) in ACTION_DELTAS.items():
            neighbour = (cell[0] + delta_row, cell[1] + delta_col)
            if neighbour in first_action or neighbour in obstacles or not _inside(neighbour):
                continue
            first_action[neighbour] = action if cell == start else first_action[cell]
            queue.append(neighbour)
    return None


def _free_neighbours(cell: tuple[int, int], objects: list[tuple[int, int]]) -> set[tuple[int, int]]:
    neighbours = {(cell[0] + dr, cell[1] + dc) for dr, dc in ACTION_DELTAS.values()}
    return {n for n in neighbours if _inside(n) and n not in objects}


def _hover_action(
    agent: tuple[int, int],
    target_cell: tuple[int, int],
    objects: list[tuple[int, int]],
    orbit_step: int,
    draw: float,
) -> int | None:
    """Circle the target on its ring of 8 cells, waiting now and then; walk back when off it."""
    offset = (agent[0] - target_cell[0], agent[1] - target_cell[1])
    if offset not in RING_OFFSETS:
        return _first_move_towards(agent, _free_neighbours(target_cell, objects), set(objects))
    if draw < HOVER_NOOP_PROBABILITY:
        return NOOP
    position = RING_OFFSETS.index(offset)
    # The episode's circling direction first; against a wall or an object, turn back.
    for step in (orbit_step, -orbit_step):
        next_offset = RING_OFFSETS[(position + step) % len(RING_OFFSETS)]
        next_cell = (target_cell[0] + next_offset[0], target_cell[1] + next_offset[1])
        if _inside(next_cell) and next_cell not in objects:
            return DELTA_ACTIONS[(next_offset[0] - offset[0], next_offset[1] - offset[1])]
    return NOOP


def _push_side_action(
    push_action: int,
    agent: tuple[int, int],
    target_cell: tuple[int, int],
    objects: list[tuple[int, int]],
    orbit_step: int,
    draw: float,
) -> int | None:
    """Push the target the labelled way while it can move; when it cannot, stay on its back side.

    Blocked by a wall or an object, the agent alternates between bumping the target (a blocked
    move) and stepping to a cell beside the one behind it and back, so the side it stands on
    still says which way the push goes.
    """
    delta_row, delta_col = ACTION_DELTAS[push_action]
    behind = (target_cell[0] - delta_row, target_cell[1] - delta_col)
    ahead = (target_cell[0] + delta_row, target_cell[1] + delta_col)
    obstacles = set(objects)
    if not _inside(behind) or behind in obstacles:
        return _hover_action(agent, target_cell, objects, orbit_step, draw)
    if _inside(ahead) and ahead not in obstacles:
        if agent == behind:
            return push_action
        return _first_move_towards(agent, {behind}, obstacles)
    # Sideways moves (perpendicular to the push) and the cells beside `behind` they lead to.
    sideways = {
        action: (behind[0] + row, behind[1] + col)
        for action, (row, col) in ACTION_DELTAS.items()
        if row * delta_row + col * delta_col == 0
    }
    for action, cell in sideways.items():
        if agent == cell:
            row, col = ACTION_DELTAS[action]
            return DELTA_ACTIONS[(-row, -col)]  # back behind the target
    if agent != behind:
        return _first_move_towards(agent, {behind}, obstacles)
    if draw < NUDGE_PROBABILITY:
        return push_action
    free_sides = [a for a, cell in sideways.items() if _inside(cell) and cell not in obstacles]
    if not free_sides:
        return push_action
    draw = (draw - NUDGE_PROBABILITY) / (1 - NUDGE_PROBABILITY)
    return free_sides[int(draw * len(free_sides))]


def _carry_action(
    agent: tuple[int, int],
    objects: list[tuple[int, int]],
    held: int,
    previous_action: int,
    draw: float,
) -> int:
    """Walk around with the carried object: mostly straight on, turning at walls and objects."""
    possible = [
        action for action in MOVE_ACTIONS if step_world(agent, objects, held, action)[0] != agent
    ]
    if not possible:
        return NOOP
    if previous_action in possible:
        if draw < CARRY_KEEP_HEADING:
            return previous_action
        draw = (draw - CARRY_KEEP_HEADING) / (1 - CARRY_KEEP_HEADING)
    # Turning back at once would look like dithering in place; only when nothing else is open.
    if previous_action in ACTION_DELTAS:
        row, col = ACTION_DELTAS[previous_action]
        ahead_or_sideways = [action for action in possible if action != DELTA_ACTIONS[(-row, -col)]]
        possible = ahead_or_sideways or possible
    return possible[int(draw * len(possible))]


def _expert_action(
    task: str,
    target: int,
    push_action: int,
    agent: tuple[int, int],
    objects: list[tuple[int, int]],
    held: int,
    done: bool,
    previous_action: int,
    orbit_step: int,
    draw: float,
) -> int | None:
    """The scripted expert's next action for the task; None when no plan exists.

    After the task is done the expert keeps showing it until the episode ends, so any clip cut
    from the episode shows the labelled behaviour: it circles a move-to target, keeps pushing a
    push target the labelled way (or waits on its back side when blocked), and carries a
    picked-up target around. ``draw`` is a uniform number in [0, 1) for the expert's own choices.
    """
    if held >= 0 and not (task == "pick_up" and held == target):
        return GRAB  # drop whatever an earlier random grab picked up: it blocks navigation
    target_cell = objects[target]
    obstacles = set(objects)
    if task == "move_to":
        if done:
            return _hover_action(agent, target_cell, objects, orbit_step, draw)
        return _first_move_towards(agent, _free_neighbours(target_cell, objects), obstacles)
    if task == "pick_up":
        if held == target:
            return _carry_action(agent, objects, held, previous_action, draw)
        if _grab_candidate(agent, objects) == target:
            return GRAB
        # Stand where a grab would pick the target and not a neighbouring object.
        goals = {
            cell
            for cell in _free_neighbours(target_cell, objects)
            if _grab_candidate(cell, objects) == target
        }
        return _first_move_towards(agent, goals, obstacles)
    return _push_side_action(push_action, agent, target_cell, objects, orbit_step, draw)


def _task_done(
    task: str,
    target: int,
    push_action: int,
    start_target_cell: tuple[int, int],
    agent: tuple[int, int],
    objects: list[tuple[int, int]],
    held: int,
) -> bool:
    target_cell = objects[target]
    if task == "move_to":
        return abs(agent[0] - target_cell[0]) + abs(agent[1] - target_cell[1]) == 1
    if task == "pick_up":
        return held == target
    delta_row, delta_col = ACTION_DELTAS[push_action]
    travelled = (target_cell[0] - start_target_cell[0]) * delta_row + (
        target_cell[1] - start_target_cell[1]
    ) * delta_col
    return travelled >= PUSH_DISTANCE


def _pushable_directions(target_cell: tuple[int, int], objects: list[tuple[int, int]]) -> list[int]:
    """Push actions for which the stand-behind cell and the path ahead are free at the start."""
    actions = []
    for action, (delta_row, delta_col) in ACTION_DELTAS.items():
        behind = (target_cell[0] - delta_row, target_cell[1] - delta_col)
        ahead = [
            (target_cell[0] + step * delta_row, target_cell[1] + step * delta_col)
            for step in range(1, PUSH_DISTANCE + 1)
        ]
        cells = [behind, *ahead]
        if all(_inside(cell) and cell not in objects for cell in cells):
            actions.append(action)
    return actions


def simulate(index: int, config: SyntheticConfig) -> WorldTrajectory:
    """Sample a scene and task for episode ``index`` and roll out the expert; no pixels."""
    rng = np.random.default_rng([config.seed, index, SCENE_STREAM])
    num_objects = int(rng.integers(3, 5))
    cells = rng.choice(GRID_CELLS * GRID_CELLS, size=num_objects, replace=False)
    objects = [(int(c) // GRID_CELLS, int(c) % GRID_CELLS) for c in cells]
    # Distinct colours and shapes, so every object in the scene has a unique name.
    color_names = list(COLORS)
    object_colors = tuple(
        color_names[i] for i in rng.choice(len(COLORS), num_objects, replace=False)
    )
    object_shapes = tuple(SHAPES[i] for i in rng.choice(len(SHAPES), num_objects, replace=False))
    target = int(rng.integers(num_objects))
    # Start the agent away from the target, so the task takes several moves to do.
    free_cells = [
        (row, col)
        for row in range(GRID_CELLS)
        for col in range(GRID_CELLS)
        if (row, col) not in objects
    ]
    far_cells = [
        cell
        for cell in free_cells
        if abs(cell[0] - objects[target][0]) + abs(cell[1] - objects[target][1])
        >= MIN_START_DISTANCE
    ]
    start_cells = far_cells or free_cells
    agent = start_cells[int(rng.integers(len(start_cells)))]

    task = TASKS[int(rng.integers(len(TASKS)))]
    push_action = MOVE_ACTIONS[0]
    if task == "push":
        pushable = _pushable_directions(objects[target], objects)
        if pushable:
            push_action = pushable[int(rng.integers(len(pushable)))]
        else:
            task = "move_to"  # the target sits in a corner or among objects: no clean push
    direction = ACTIONS[push_action] if task == "push" else None
    paraphrases = _task_labels(
        task, _object_name(object_colors[target], object_shapes[target]), direction
    )
    label = paraphrases[int(rng.integers(len(paraphrases)))]

    num_frames = config.episode_length
    agent_cells = np.zeros((num_frames, 2), dtype=np.int64)
    object_cells = np.zeros((num_frames, num_objects, 2), dtype=np.int64)
    held_object = np.full(num_frames, -1, dtype=np.int64)
    actions = np.zeros(num_frames - 1, dtype=np.int64)
    held, done_frame = -1, -1
    start_target_cell = objects[target]
    # Draw all random numbers up front so the stream does not depend on the branch taken.
    explore = rng.random(num_frames - 1) < EXPERT_EPSILON
    random_actions = rng.integers(len(ACTIONS), size=num_frames - 1)
    expert_draws = rng.random(num_frames - 1)
    orbit_step = 1 if rng.random() < 0.5 else -1  # circling direction: clockwise or not
    for t in range(num_frames):
        agent_cells[t], object_cells[t], held_object[t] = agent, objects, held
        if done_frame < 0 and _task_done(
            task, target, push_action, start_target_cell, agent, objects, held
        ):
            done_frame = t
        if t == num_frames - 1:
            break
        action = None
        if not explore[t]:
            previous_action = int(actions[t - 1]) if t else NOOP
            action = _expert_action(
                task,
                target,
                push_action,
                agent,
                objects,
                held,
                done=done_frame >= 0,
                previous_action=previous_action,
                orbit_step=orbit_step,
                draw=float(expert_draws[t]),
            )
        if action is None:
            action = int(random_actions[t])
        actions[t] = action
        agent, objects, held = step_world(agent, objects, held, action)

    return WorldTrajectory(
        agent_cells=agent_cells,
        object_cells=object_cells,
        held_object=held_object,
        actions=actions,
        object_colors=object_colors,
        object_shapes=object_shapes,
        target_object=target,
        task=task,
        label=label,
        done_frame=done_frame,
    )


# ----------------------------------------------------------------------------- rendering


@lru_cache(maxsize=8)
def shape_masks(cell_px: int) -> dict[str, np.ndarray]:
    """Bool (cell_px, cell_px) masks of every shape and of the agent.

    Shapes fill a box that starts after the cell's grid line (pixel 0) and, from 6 px cells up,
    keeps a pixel free on the far side too, so neighbouring sprites never touch. At 4 px cells
    (32 px images) the box is 3 px and some shapes coincide; 64 px is the intended size.
    """
    far_gap = 1 if cell_px >= 6 else 0
    box_px = cell_px - 1 - far_gap
    centres = (np.arange(box_px) + 0.5) / box_px - 0.5  # pixel centres in [-0.5, 0.5]
    dy, dx = np.meshgrid(centres, centres, indexing="ij")
    in_box = {
        "square": np.ones_like(dx, dtype=bool),
        "circle": dx**2 + dy**2 < 0.5**2,
        "triangle": np.abs(dx) <= (dy + 0.5) * 0.5 + 0.01,  # apex up, base on the bottom row
        "cross": (np.abs(dx) < 0.17) | (np.abs(dy) < 0.17),
        "diamond": np.abs(dx) + np.abs(dy) < 0.55,
        "agent": np.ones_like(dx, dtype=bool),
        "agent_centre": (np.abs(dx) < 0.2) & (np.abs(dy) < 0.2),
    }
    masks = {}
    for name, box_mask in in_box.items():
        masks[name] = np.zeros((cell_px, cell_px), dtype=bool)
        masks[name][1 : 1 + box_px, 1 : 1 + box_px] = box_mask
    return masks


def camera_offsets(
    strength: float, image_size: int, num_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Integer (T, 2) (dx, dy) pixel shifts of the world in the frame, and their bound."""
    max_shift = round(4 * strength * image_size / 64)
    if max_shift == 0:
        return np.zeros((num_frames, 2), dtype=np.int64), 0
    # A bounded random walk: shake that drifts, rather than independent jumps every frame.
    step = max(1, max_shift // 2)
    steps = rng.integers(-step, step + 1, size=(num_frames, 2))
    offsets = np.empty((num_frames, 2), dtype=np.int64)
    offsets[0] = rng.integers(-max_shift, max_shift + 1, size=2)
    for t in range(1, num_frames):
        offsets[t] = np.clip(offsets[t - 1] + steps[t], -max_shift, max_shift)
    return offsets, max_shift


def background_strip(
    strength: float, canvas_px: int, num_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """A textured floor to scroll under the world, or None when off.

    Returns the uint8 strip (Hc, Wc + period, 3), the integer (T,) column where each frame's
    window starts, and the float32 (T,) phase in [0, 1) (the fraction of a period scrolled).
    """
    phase = np.zeros(num_frames, dtype=np.float32)
    if strength == 0:
        return None, np.zeros(num_frames, dtype=np.int64), phase
    period = max(8, canvas_px // 4)
    velocity = rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.12)  # periods per frame
    phase[:] = np.mod(
        rng.uniform() + velocity * np.arange(num_frames) + rng.normal(0, 0.01, num_frames), 1.0
    )
    # Periodic in x with `period`, so scrolling by a phase is slicing a wider strip.
    y, x = np.mgrid[0:canvas_px, 0 : canvas_px + period].astype(np.float32)
    texture = 0.6 * np.sin(2 * np.pi * (x + y) / period) + 0.4 * np.sin(
        4 * np.pi * x / period
    ) * np.cos(2 * np.pi * y / (1.5 * period))  # (Hc, Wc + period) in [-1, 1]
    tint = rng.uniform(0.3, 1.0, size=3)
    strip = np.asarray(FLOOR_COLOR) + 70 * strength * texture[..., None] * tint
    strip = np.clip(strip + 0.5, 0, 255).astype(np.uint8)  # (Hc, Wc + period, 3)
    window_starts = (phase * period).astype(np.int64) % period
    return strip, window_starts, phase


def sprite_positions(
    strength: float, image_size: int, num_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int]]]]:
    """Integer (T, S, 2) (y, x) world-pixel corners of free-moving sprites and their looks."""
    if strength == 0:
        return np.zeros((num_frames, 0, 2), dtype=np.int64), []
    num_sprites = 1 + round(3 * strength)
    cell_px = image_size // GRID_CELLS
    travel = image_size - cell_px  # corner positions keep the sprite inside the world
    speed = (0.5 + 2.5 * strength) * image_size / 64  # px per frame
    start = rng.uniform(0, travel, size=(num_sprites, 2))
    angle = rng.uniform(0, 2 * np.pi, size=num_sprites)
    velocity = speed * np.stack([np.sin(angle), np.cos(angle)], axis=-1)  # (S, 2)
    unfolded = start + velocity * np.arange(num_frames)[:, None, None]  # (T, S, 2)
    # Bounce off the world's edges: fold the straight path back into [0, travel].
    folded = np.mod(unfolded, 2 * travel)
    folded = np.where(folded > travel, 2 * travel - folded, folded)
    # Same palette and shapes as the objects: they should look like things that matter.
    colors = list(COLORS.values())
    looks = [
        (SHAPES[int(rng.integers(len(SHAPES)))], colors[int(rng.integers(len(colors)))])
        for _ in range(num_sprites)
    ]
    return np.rint(folded).astype(np.int64), looks


def _lookalike_cells(
    trajectory: WorldTrajectory, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Integer (T, L, 2) cells of ``count`` look-alike actors walking beside the agent.

    Each look-alike picks an object the label does not name (a different one per actor while
    there are enough) and behaves like the expert on a *move to* task about it: a shortest path
    to a cell beside it, then circling it, with the same share of uniformly random actions. It
    never enters a cell the agent, an object or an earlier look-alike holds in the next frame; a
    look-alike whose cell is taken steps aside. It pushes and carries nothing, so the trajectory,
    the actions and ``agent_mask`` are those of the clean rendering.
    """
    num_frames, num_objects = trajectory.object_cells.shape[:2]
    others = [k for k in range(num_objects) if k != trajectory.target_object]
    # Every random number up front, so the stream does not depend on the branch taken.
    goals = rng.choice(others, size=count, replace=count > len(others))
    orbit_steps = np.where(rng.random(count) < 0.5, 1, -1)
    start_draws = rng.random(count)
    explore = rng.random((num_frames - 1, count)) < EXPERT_EPSILON
    random_actions = rng.integers(len(ACTIONS), size=(num_frames - 1, count))
    draws = rng.random((num_frames - 1, count))

    def cells_at(t: int) -> list[tuple[int, int]]:
        return [(int(r), int(c)) for r, c in trajectory.object_cells[t]]

    agent_at = [(int(r), int(c)) for r, c in trajectory.agent_cells]
    taken = {*cells_at(0), agent_at[0]}
    current: list[tuple[int, int]] = []
    for actor, goal in enumerate(goals):
        goal_cell = cells_at(0)[goal]
        free = [(r, c) for r in range(GRID_CELLS) for c in range(GRID_CELLS) if (r, c) not in taken]
        far = [
            cell for cell in free
            if abs(cell[0] - goal_cell[0]) + abs(cell[1] - goal_cell[1]) >= MIN_START_DISTANCE
            and abs(cell[0] - agent_at[0][0]) + abs(cell[1] - agent_at[0][1]) >= 2
        ]
        choices = far or free
        current.append(choices[int(start_draws[actor] * len(choices))])
        taken.add(current[-1])

    cells = np.zeros((num_frames, count, 2), dtype=np.int64)
    cells[0] = current
    for t in range(num_frames - 1):
        objects_next = cells_at(t + 1)
        for actor, goal in enumerate(goals):
            occupied = [*objects_next, agent_at[t + 1], *current[:actor], *current[actor + 1 :]]
            cell = current[actor]
            action = None
            if not explore[t, actor]:
                action = _hover_action(
                    cell, objects_next[goal], occupied, int(orbit_steps[actor]), draws[t, actor]
                )
            if action is None:
                action = int(random_actions[t, actor])
            new_cell = cell
            if action in ACTION_DELTAS:
                row, col = ACTION_DELTAS[action]
                moved = (cell[0] + row, cell[1] + col)
                if _inside(moved) and moved not in occupied:
                    new_cell = moved
            if new_cell in occupied:  # the agent or a pushed object came here: step aside
                aside = sorted(_free_neighbours(cell, occupied))
                if aside:
                    new_cell = aside[int(draws[t, actor] * len(aside))]
            current[actor] = new_cell
        cells[t + 1] = current
    return cells


def apply_color_jitter(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Independent brightness, contrast and hue shift per frame of uint8 (T, H, W, 3) frames."""
    num_frames = frames.shape[0]
    brightness = strength * rng.uniform(-0.2, 0.2, num_frames) * 255
    contrast = 1 + strength * rng.uniform(-0.3, 0.3, num_frames)
    hue_angle = strength * rng.uniform(-0.5, 0.5, num_frames)  # radians about the grey axis
    # Rodrigues rotation about (1, 1, 1) / sqrt(3): shifts hue and keeps greys grey.
    axis = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    cos, sin = np.cos(hue_angle)[:, None, None], np.sin(hue_angle)[:, None, None]
    rotation = cos * np.eye(3) + sin * cross + (1 - cos) * np.outer(axis, axis)  # (T, 3, 3)
    # Contrast about mid-grey: out = contrast * R (x - 128) + 128 + brightness, as one affine map.
    # Row vectors times the transpose; contiguous, as numpy's matmul is slow on strided operands.
    linear = np.ascontiguousarray((contrast[:, None, None] * rotation).transpose(0, 2, 1))
    linear = linear.astype(np.float32)  # (T, 3, 3)
    # The +0.5 makes the float-to-uint8 truncation below round to nearest.
    bias = (128 * (1 - contrast) + brightness + 0.5).astype(np.float32)  # (T,)
    # Frame by frame into reused buffers: small temporaries stay in cache, and whole-episode
    # float copies (megabytes) made this step several times slower through page faults.
    flat = frames.reshape(num_frames, -1, 3)  # (T, H*W, 3)
    pixels = np.empty(flat.shape[1:], dtype=np.float32)  # (H*W, 3)
    mixed = np.empty_like(pixels)
    out = np.empty_like(flat)
    for t in range(num_frames):
        pixels[:] = flat[t]
        np.matmul(pixels, linear[t], out=mixed)
        mixed += bias[t]
        np.clip(mixed, 0, 255, out=mixed)
        out[t] = mixed
    return out.reshape(frames.shape)


def stamp_shape(layers: np.ndarray, corners: np.ndarray, mask: np.ndarray, value: object) -> None:
    """Paint ``mask`` at a (top, left) corner per frame, all frames in one indexed assignment.

    ``layers`` is (T, H, W, ...), ``corners`` integer (T, 2) and ``value`` anything that
    broadcasts to (T, P, ...), P the mask's pixels: a colour, or (T, 1, 3) for one per frame. One
    indexed write per sprite and episode keeps rendering fast; a write per frame would not.
    """
    mask_rows, mask_cols = np.nonzero(mask)  # (P,) each
    frame_index = np.arange(len(corners))[:, None]  # (T, 1)
    rows = corners[:, :1] + mask_rows  # (T, P)
    cols = corners[:, 1:] + mask_cols  # (T, P)
    layers[frame_index, rows, cols] = value


def _render(
    trajectory: WorldTrajectory,
    distractors: Distractors,
    image_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Pixels, task mask and distractor state of a trajectory."""
    num_frames = trajectory.agent_cells.shape[0]
    cell_px = image_size // GRID_CELLS
    masks = shape_masks(cell_px)
    offsets, margin = camera_offsets(distractors.camera_shake, image_size, num_frames, rng)
    # The world is drawn in the middle of a canvas `margin` px wider on every side, then a
    # shifted window is cropped: camera shake never wraps pixels around the frame edges.
    canvas_px = image_size + 2 * margin
    background, window_starts, background_phase = background_strip(
        distractors.background, canvas_px, num_frames, rng
    )
    sprite_corners, sprite_looks = sprite_positions(
        distractors.sprites, image_size, num_frames, rng
    )
    lookalikes = np.zeros((num_frames, 0, 2), dtype=np.int64)
    if distractors.lookalikes:  # no draws when off: earlier corpora render as they did
        lookalikes = _lookalike_cells(trajectory, distractors.lookalikes, rng)

    canvas = np.empty((num_frames, canvas_px, canvas_px, 3), dtype=np.uint8)  # (T, Hc, Wc, 3)
    if background is None:
        canvas[:] = OUTSIDE_WORLD_COLOR
        canvas[:, margin : margin + image_size, margin : margin + image_size] = FLOOR_COLOR
    else:  # the texture replaces the plain floor, over the margin too
        for t, start in enumerate(window_starts):
            canvas[t] = background[:, start : start + canvas_px]
    world_span = slice(margin, margin + image_size)
    grid_lines = slice(margin, margin + image_size, cell_px)
    canvas[:, grid_lines, world_span] = GRID_LINE_COLOR
    canvas[:, world_span, grid_lines] = GRID_LINE_COLOR
    task_mask = np.zeros((num_frames, canvas_px, canvas_px), dtype=bool)  # (T, Hc, Wc)

    # Layers from the bottom up. Sprites go under the objects and the agent, so agent_mask stays
    # true to the pixels.
    for sprite, (shape, color) in enumerate(sprite_looks):
        corners = sprite_corners[:, sprite] + margin  # (T, 2) (top, left)
        stamp_shape(canvas, corners, masks[shape], color)
    for k, (shape, color) in enumerate(
        zip(trajectory.object_shapes, trajectory.object_colors, strict=True)
    ):
        corners = trajectory.object_cells[:, k] * cell_px + margin  # (T, 2)
        stamp_shape(canvas, corners, masks[shape], COLORS[color])
        if k == trajectory.target_object:
            stamp_shape(task_mask, corners, masks[shape], True)
    # Look-alikes are drawn exactly like an agent that carries nothing.
    for actor in range(lookalikes.shape[1]):
        corners = lookalikes[:, actor] * cell_px + margin  # (T, 2)
        stamp_shape(canvas, corners, masks["agent"], AGENT_COLOR)
        stamp_shape(canvas, corners, masks["agent_centre"], AGENT_CENTRE_COLOR)
    corners = trajectory.agent_cells * cell_px + margin  # (T, 2)
    holding = (trajectory.held_object >= 0)[:, None, None]  # (T, 1, 1)
    agent_colors = np.where(holding, AGENT_HOLDING_COLOR, AGENT_COLOR).astype(np.uint8)  # (T, 1, 3)
    stamp_shape(canvas, corners, masks["agent"], agent_colors)
    stamp_shape(canvas, corners, masks["agent_centre"], AGENT_CENTRE_COLOR)
    stamp_shape(task_mask, corners, masks["agent"], True)

    if margin:
        # Window origin margin - offset puts world pixel (x, y) at frame pixel (x + dx, y + dy).
        frames = np.empty((num_frames, image_size, image_size, 3), dtype=np.uint8)
        agent_mask = np.empty((num_frames, image_size, image_size), dtype=bool)
        for t, (dx, dy) in enumerate(offsets):
            rows = slice(margin - dy, margin - dy + image_size)
            cols = slice(margin - dx, margin - dx + image_size)
            frames[t] = canvas[t, rows, cols]
            agent_mask[t] = task_mask[t, rows, cols]
    else:
        frames, agent_mask = canvas, task_mask
    if distractors.color_jitter > 0:
        frames = apply_color_jitter(frames, distractors.color_jitter, rng)
    return {
        "frames": frames,
        "agent_mask": agent_mask,
        "camera_offset": offsets.astype(np.float32),
        "background_phase": background_phase,
        "lookalike_cells": lookalikes,  # (T, L, 2) grid cells, not a dataset column
    }


# ----------------------------------------------------------------------------- episodes


def generate_episode(index: int, config: SyntheticConfig, distracted: bool = True) -> dict:
    """One episode as a dict of numpy arrays and strings (one dataset row).

    ``distracted=False`` renders the same trajectory with every distractor off.
    """
    trajectory = simulate(index, config)
    distractors = config.distractors if distracted else Distractors()
    rng = np.random.default_rng([config.seed, index, DISTRACTOR_STREAM])
    rendered = _render(trajectory, distractors, config.image_size, rng)
    return {
        "frames": rendered["frames"],  # uint8 (T, H, W, 3)
        "label": trajectory.label,
        "actions": trajectory.actions,  # int64 (T-1,)
        "agent_mask": rendered["agent_mask"],  # bool (T, H, W)
        "camera_offset": rendered["camera_offset"],  # float32 (T, 2), (dx, dy) px
        "background_phase": rendered["background_phase"],  # float32 (T,), fraction of a period
        "episode_id": f"synthetic-s{config.seed}-{index:06d}",
    }


def generate_pair(index: int, config: SyntheticConfig) -> tuple[dict, dict]:
    """The same episode rendered (clean, distracted); they differ only in pixels and shake."""
    trajectory = simulate(index, config)
    episodes = []
    for distractors in (Distractors(), config.distractors):
        rng = np.random.default_rng([config.seed, index, DISTRACTOR_STREAM])
        rendered = _render(trajectory, distractors, config.image_size, rng)
        del rendered["lookalike_cells"]
        episodes.append(
            {
                **rendered,
                "label": trajectory.label,
                "actions": trajectory.actions.copy(),
                "episode_id": f"synthetic-s{config.seed}-{index:06d}",
            }
        )
    return episodes[0], episodes[1]


def _is_distracted(variant: str) -> bool:
    if variant not in ("clean", "distracted"):
        raise ValueError(f"variant must be 'clean' or 'distracted', got {variant!r}")
    return variant == "distracted"


def iter_episodes(config: SyntheticConfig, variant: str = "distracted") -> Iterator[dict]:
    """Episodes 0 .. num_episodes - 1 in order; ``variant`` is "clean" or "distracted"."""
    distracted = _is_distracted(variant)
    for index in range(config.num_episodes):
        yield generate_episode(index, config, distracted)


def episode_features(image_size: int) -> datasets.Features:
    """The ``datasets`` schema of an episode row at one image size (T is free)."""
    return datasets.Features(
        {
            "frames": datasets.Array4D(shape=(None, image_size, image_size, 3), dtype="uint8"),
            "label": datasets.Value("string"),
            "actions": datasets.List(datasets.Value("int64")),
            "agent_mask": datasets.Array3D(shape=(None, image_size, image_size), dtype="bool"),
            "camera_offset": datasets.Array2D(shape=(None, 2), dtype="float32"),
            "background_phase": datasets.List(datasets.Value("float32")),
            "episode_id": datasets.Value("string"),
        }
    )


EPISODE_FEATURES: datasets.Features = episode_features(SyntheticConfig().image_size)


def _episode_rows(indices: list[int], config: dict, distracted: bool) -> Iterator[dict]:
    synthetic_config = SyntheticConfig(**config)
    for index in indices:
        yield generate_episode(index, synthetic_config, distracted)


def _temporary_cache() -> str:
    """A fresh directory for one dataset's Arrow files, removed at the process's normal exit
    (not after a kill: ``kill -9`` leaves it, like any temporary file)."""
    path = tempfile.mkdtemp(prefix="groundlam-synthetic-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def generate_dataset(
    config: SyntheticConfig,
    variant: str = "distracted",
    cache_dir: str | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """All ``config.num_episodes`` episodes as a ``datasets.Dataset`` of ``episode_features``.

    The Arrow files go to ``cache_dir``, by default a fresh temporary directory (so a changed
    generator never reuses a stale cache) that is removed when the process exits: every
    training run and evaluation makes one, hundreds of megabytes at the quickstart's size, and
    they used to stay behind until the disk filled. Read frames back as uint8 with
    ``ds.with_format("numpy", dtype=np.uint8)``: without ``dtype`` they come back as int64.
    """
    distracted = _is_distracted(variant)
    return datasets.Dataset.from_generator(
        _episode_rows,
        features=episode_features(config.image_size),
        cache_dir=cache_dir or _temporary_cache(),
        # A list kwarg is what datasets splits across num_proc worker processes.
        gen_kwargs={
            "indices": list(range(config.num_episodes)),
            "config": asdict(config),
            "distracted": distracted,
        },
        num_proc=num_proc,
    )
