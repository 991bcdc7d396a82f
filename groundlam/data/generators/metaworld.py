"""Meta-World demonstrations: the scripted expert of each task, rendered with MuJoCo.

Dimension keys:
    T  frames of an episode (T - 1 actions)
    H  height, W width (pixels, both ``image_size``)
    A  action dimensions (4: end-effector dx, dy, dz and gripper effort, each in [-1, 1])

Needs the optional extra ``groundlam[metaworld]`` (``metaworld``, MIT; ``mujoco``, Apache-2.0).
Rendering is off-screen OpenGL: ``MUJOCO_GL`` defaults to ``egl`` here when unset (Mesa's EGL
works without a GPU); set ``MUJOCO_GL=osmesa`` with Debian's ``libosmesa6`` where EGL is missing.
Shadows, reflections and multisampling are switched off: the stock settings render ~10x slower on
a CPU and add nothing a latent action model needs.

Episode ``index`` of a config is a pure function of ``(seed, index)``: the task name and one of
its 50 ``MT1`` variations (object and goal positions) are drawn from that pair, the expert policy
acts for ``episode_length - 1`` steps (it keeps acting after success) with Gaussian
``action_noise`` added and the result clipped to [-1, 1] (the experts often saturate at +-1, so
clean expert actions carry little information), and every frame is rendered from a free camera
looking at the table (not the ``corner`` cameras, whose raw images are upside down).

``agent_mask`` covers the robot and every object that can move: the pixels of MuJoCo's
segmentation rendering whose geom hangs below a joint or a mocap body. The background mask for
the moving texture is the floor and the sky (the world body and no geom).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import datasets
import numpy as np

from groundlam.data.generators.common import (
    DISTRACTOR_STREAM,
    SCENE_STREAM,
    Closing,
    apply_distractors,
    clean_parameters,
)
from groundlam.data.synthetic import Distractors, episode_features

__all__ = ["TASK_LABELS", "MetaWorldConfig", "MetaWorldGenerator", "metaworld_features"]

# One natural sentence per Meta-World v3 task: the episode's label.
TASK_LABELS: dict[str, str] = {
    "assembly-v3": "put the ring onto the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the cube from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from above",
    "button-press-topdown-wall-v3": "press the button from above behind the wall",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out of the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "lift the ring off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "hand-insert-v3": "put the gripper into the hole",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it behind the wall",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate sideways back out of the goal",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "push the bottle with the stick",
    "stick-pull-v3": "pull the bottle with the stick",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back to the goal",
    "reach-v3": "reach to the goal position",
    "reach-wall-v3": "reach over the wall to the goal position",
    "shelf-place-v3": "put the block on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}


@dataclass
class CameraView:
    """A MuJoCo free camera: the point it looks at, its distance, and its angles in degrees."""

    lookat: tuple[float, float, float] = (0.0, 0.65, 0.1)
    distance: float = 1.5
    azimuth: float = 150.0
    elevation: float = -30.0


@dataclass
class MetaWorldConfig:
    """Which tasks, how many episodes, how long, how big, which seed, which distractors."""

    tasks: tuple[str, ...] = tuple(TASK_LABELS)  # Meta-World v3 task names, drawn uniformly
    num_episodes: int = 100
    episode_length: int = 150  # frames, episode_length - 1 expert steps (most succeed by 190)
    image_size: int = 64  # pixels per side
    seed: int = 0
    action_noise: float = 0.1  # std of Gaussian noise on the expert's actions, before clipping
    camera: CameraView = field(default_factory=CameraView)
    distractors: Distractors = field(default_factory=Distractors)
    # Strength in [0, 1] of the camera-pose jitter inside MuJoCo (distracted rendering only): a
    # smooth random walk of up to 12 degrees azimuth, 6 elevation, 0.1 m distance and 5 cm lookat.
    camera_pose: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.distractors, dict):
            self.distractors = Distractors(**self.distractors)
        if self.distractors.lookalikes:
            raise ValueError("MetaWorldConfig: the Meta-World generator draws no look-alike "
                             "actors (distractors lookalikes must be 0)")
        if isinstance(self.camera, dict):
            self.camera = CameraView(**self.camera)
        if isinstance(self.tasks, str):
            self.tasks = tuple(t for t in self.tasks.split(",") if t)
        self.tasks = tuple(self.tasks)
        unknown = [t for t in self.tasks if t not in TASK_LABELS]
        if unknown or not self.tasks:
            raise ValueError(f"MetaWorldConfig.tasks: unknown task {unknown[:1] or '(none)'}; "
                             f"known: {', '.join(TASK_LABELS)}")
        if self.num_episodes < 0:
            raise ValueError(f"MetaWorldConfig.num_episodes must be >= 0, got {self.num_episodes}")
        if self.episode_length < 2:
            raise ValueError(f"MetaWorldConfig.episode_length must be >= 2, "
                             f"got {self.episode_length}")
        if not 16 <= self.image_size <= 480:
            raise ValueError(f"MetaWorldConfig.image_size must be in [16, 480], "
                             f"got {self.image_size}")
        if self.action_noise < 0:
            raise ValueError(f"MetaWorldConfig.action_noise must be >= 0, got {self.action_noise}")
        if not 0.0 <= self.camera_pose <= 1.0:
            raise ValueError(f"MetaWorldConfig.camera_pose must be in [0, 1], "
                             f"got {self.camera_pose}")
        if self.seed < 0:
            raise ValueError(f"MetaWorldConfig.seed must be >= 0, got {self.seed}")


def metaworld_features(image_size: int) -> datasets.Features:
    """The ``datasets`` schema of a Meta-World episode row (T is free): the synthetic benchmark's
    columns with 4-d continuous actions, plus sprite positions, the camera pose, per-frame
    success and the task name."""
    return datasets.Features({
        **episode_features(image_size),
        "actions": datasets.Array2D(shape=(None, 4), dtype="float32"),
        "sprite_positions": datasets.List(datasets.List(datasets.Value("float32"))),
        "camera_pose": datasets.Array2D(shape=(None, 6), dtype="float32"),
        "success": datasets.List(datasets.Value("bool")),
        "task": datasets.Value("string"),
    })


def _import_metaworld():
    os.environ.setdefault("MUJOCO_GL", "egl")  # read by mujoco when it is first imported
    try:
        import metaworld
        import mujoco
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as error:
        raise ImportError("the Meta-World generator needs metaworld and mujoco: "
                          "pip install 'groundlam[metaworld]'") from error
    return metaworld, mujoco, ENV_POLICY_MAP


def _camera_track(view: CameraView, strength: float, num_frames: int,
                  rng: np.random.Generator) -> np.ndarray:
    """float32 (T, 6) camera poses: lookat x, y, z, distance, azimuth, elevation."""
    base = np.array([*view.lookat, view.distance, view.azimuth, view.elevation], dtype=np.float64)
    track = np.repeat(base[None], num_frames, axis=0)
    if strength == 0:
        return track.astype(np.float32)
    bounds = strength * np.array([0.05, 0.05, 0.05, 0.1, 12.0, 6.0])
    # A bounded random walk, like the image-space shake: drift, not independent jumps.
    steps = rng.normal(0.0, 0.25, size=(num_frames, 6)) * bounds
    offset = rng.uniform(-1, 1, size=6) * bounds
    for t in range(num_frames):
        if t:
            offset = np.clip(offset + steps[t], -bounds, bounds)
        track[t] += offset
    return track.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _benchmark(task: str, seed: int):
    """``metaworld.MT1(task, seed)``: its environment class and 50 variations (pure data).

    Building it resets a fresh environment 50 times (~3 s); generators of the same seed share it.
    """
    metaworld, _, _ = _import_metaworld()
    benchmark = metaworld.MT1(task, seed=seed)
    return benchmark.train_classes[task], tuple(benchmark.train_tasks)


class _TaskScene:
    """One task's environment, expert, renderer and geom lookups (built once, then reused)."""

    def __init__(self, task: str, seed: int, image_size: int) -> None:
        _, mujoco, policies = _import_metaworld()
        self.mujoco = mujoco
        env_class, self.variations = _benchmark(task, seed)  # variations: object, goal positions
        self.env = env_class()
        self.policy = policies[task]()
        model = self.env.model
        model.vis.quality.offsamples = 0  # no multisampling; must precede the renderer
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
        self.renderer = mujoco.Renderer(model, image_size, image_size)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        # Geom id -> (robot or movable object, background); index 0 is "no geom" (seg id -1).
        movable = np.zeros(model.ngeom + 1, dtype=bool)
        background = np.zeros(model.ngeom + 1, dtype=bool)
        background[0] = True
        for geom in range(model.ngeom):
            body = model.geom_bodyid[geom]
            background[geom + 1] = body == 0
            while body != 0:
                if model.body_jntnum[body] > 0 or model.body_mocapid[body] >= 0:
                    movable[geom + 1] = True
                    break
                body = model.body_parentid[body]
        self.movable, self.background = movable, background

    def render(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 (H, W, 3) frame, bool (H, W) robot+object mask, bool (H, W) background)."""
        mujoco, renderer, camera = self.mujoco, self.renderer, self.camera
        camera.lookat[:] = pose[:3]
        camera.distance, camera.azimuth, camera.elevation = (float(v) for v in pose[3:])
        renderer.update_scene(self.env.data, camera=camera)
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        frame = renderer.render().copy()
        # The segmentation pass reuses the scene just built: no second update_scene.
        renderer.enable_segmentation_rendering()
        try:
            segmentation = renderer.render()  # (H, W, 2): object id, object type
        finally:
            renderer.disable_segmentation_rendering()
        is_geom = segmentation[..., 1] == mujoco.mjtObj.mjOBJ_GEOM
        geom = np.where(is_geom, segmentation[..., 0] + 1, 0)  # sites and skybox -> 0
        none = segmentation[..., 0] < 0
        return frame, self.movable[geom] & is_geom, self.background[geom] & (is_geom | none)


class MetaWorldGenerator(Closing):
    """Renders the episodes of one ``MetaWorldConfig``; keeps one scene per task for all of them.

    >>> generator = MetaWorldGenerator(MetaWorldConfig(tasks=("reach-v3",), episode_length=8))
    >>> clean, distracted = generator.pair(0)   # same actions and label, other pixels
    """

    def __init__(self, config: MetaWorldConfig) -> None:
        self.config = config
        _import_metaworld()  # fail here, with the install hint, rather than on the first episode
        self._scenes: dict[str, _TaskScene] = {}

    def features(self) -> datasets.Features:
        return metaworld_features(self.config.image_size)

    def close(self) -> None:
        """Free the OpenGL contexts now (left to the garbage collector, they can fail noisily
        at interpreter exit, after EGL is unloaded)."""
        for scene in self._scenes.values():
            scene.renderer.close()
            scene.env.close()
        self._scenes.clear()

    def _scene(self, task: str) -> _TaskScene:
        if task not in self._scenes:
            self._scenes[task] = _TaskScene(task, self.config.seed, self.config.image_size)
        return self._scenes[task]

    def _rollout(self, index: int, poses: list[np.ndarray]) -> dict:
        """Run the expert once and render every frame from each camera track in ``poses``."""
        config = self.config
        rng = np.random.default_rng([config.seed, index, SCENE_STREAM])
        task = config.tasks[int(rng.integers(len(config.tasks)))]
        scene = self._scene(task)
        variation = int(rng.integers(len(scene.variations)))
        env = scene.env
        env.set_task(scene.variations[variation])  # freezes object and goal positions
        env.seed(int(rng.integers(2**31)))
        observation, _ = env.reset()
        num_frames = config.episode_length
        renders = [[] for _ in poses]
        actions = np.zeros((num_frames - 1, 4), dtype=np.float32)
        success = np.zeros(num_frames, dtype=bool)
        noise = rng.normal(0.0, config.action_noise, size=(num_frames - 1, 4))
        for t in range(num_frames):
            for track, out in zip(poses, renders, strict=True):
                out.append(scene.render(track[t]))
            if t == num_frames - 1:
                break
            action = np.clip(scene.policy.get_action(observation) + noise[t], -1.0, 1.0)
            actions[t] = action
            observation, _, _, _, info = env.step(action.astype(np.float32))
            success[t + 1] = bool(info.get("success", 0.0))
        rendered = [tuple(np.stack(parts) for parts in zip(*out, strict=True)) for out in renders]
        return {"task": task, "variation": variation, "actions": actions, "success": success,
                "rendered": rendered}

    def _row(self, index: int, rollout: dict, rendered: tuple, pose: np.ndarray) -> tuple:
        frames, agent_mask, background_mask = rendered
        row = {
            "frames": frames,  # uint8 (T, H, W, 3)
            "label": TASK_LABELS[rollout["task"]],
            "actions": rollout["actions"].copy(),  # float32 (T-1, 4)
            "agent_mask": agent_mask,  # bool (T, H, W)
            **clean_parameters(len(frames)),
            "camera_pose": pose,  # float32 (T, 6)
            "success": rollout["success"].copy(),  # bool (T,)
            "episode_id": f"metaworld-{rollout['task']}-s{self.config.seed}-{index:06d}",
            "task": rollout["task"],
        }
        return row, background_mask

    def _poses(self, index: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        config = self.config
        rng = np.random.default_rng([config.seed, index, DISTRACTOR_STREAM])
        clean = _camera_track(config.camera, 0.0, config.episode_length, rng)
        jittered = _camera_track(config.camera, config.camera_pose, config.episode_length, rng)
        return clean, jittered, rng

    def _distract(self, row: dict, background_mask: np.ndarray, rng) -> dict:
        rendered = apply_distractors(row["frames"], row["agent_mask"], self.config.distractors,
                                     rng, background_mask)
        return {**row, **rendered}

    def episode(self, index: int, distracted: bool = True) -> dict:
        """Episode ``index`` as one dataset row (numpy arrays and strings)."""
        clean_pose, jittered_pose, rng = self._poses(index)
        pose = jittered_pose if distracted else clean_pose
        rollout = self._rollout(index, [pose])
        row, background_mask = self._row(index, rollout, rollout["rendered"][0], pose)
        return self._distract(row, background_mask, rng) if distracted else row

    def pair(self, index: int) -> tuple[dict, dict]:
        """(clean, distracted) renderings of one expert rollout."""
        clean_pose, jittered_pose, rng = self._poses(index)
        jitter = self.config.camera_pose > 0
        rollout = self._rollout(index, [clean_pose, jittered_pose] if jitter else [clean_pose])
        clean, _ = self._row(index, rollout, rollout["rendered"][0], clean_pose)
        distracted, background_mask = self._row(index, rollout, rollout["rendered"][-1],
                                                jittered_pose)
        return clean, self._distract(distracted, background_mask, rng)
