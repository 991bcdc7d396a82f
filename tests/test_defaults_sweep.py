"""The defaults sweep's bookkeeping (its runs are measurements, not tests)."""

import pytest

from evals import defaults_sweep


def _entry(arm, seed, rendering, probe, ratio=None):
    train = {} if ratio is None else {"infonce_over_reconstruction_grad": ratio}
    scored = {"probe": probe, "pixels": 0.3, "ceiling": 0.9, "controllability": 1.0,
              "retrieval_top1": 0.1}
    return {"arm": arm, "seed": seed, "rendering": rendering, "clean": scored,
            "distracted": {**scored, "probe": probe / 2}, "train": train}


def test_summary_groups_by_arm_and_training_rendering_with_every_seed():
    scores = [_entry("a", 2, "clean", 0.9, 1.0), _entry("a", 0, "clean", 0.5, 3.0),
              _entry("a", 1, "clean", 0.7, 2.0), _entry("a", 0, "distracted", 0.4)]
    summary = defaults_sweep.summarise(scores)
    assert set(summary) == {"a / trained clean", "a / trained distracted"}
    clean = summary["a / trained clean"]
    assert clean["seeds"] == [0, 1, 2]
    assert clean["clean/probe"] == {"median": 0.7, "seeds": [0.5, 0.7, 0.9]}
    assert clean["distracted/probe"]["median"] == 0.35
    assert clean["infonce_over_reconstruction_grad"]["median"] == 2.0
    assert "infonce_over_reconstruction_grad" not in summary["a / trained distracted"]


def test_every_arm_names_what_it_changes():
    """An arm that leaves a swept field to configs/tiny.yaml would change meaning when the
    defaults change: every arm sets the encoder mixing, the closed-form matching and the
    InfoNCE weight itself, and when InfoNCE is on, the step it starts at."""
    for arm, overrides in defaults_sweep.ARMS.items():
        values = dict(override.split("=", 1) for override in overrides)
        assert {"model.patch_mixing", "model.color_matching", "model.shift_matching",
                "loss.infonce_weight"} <= set(values), arm
        if float(values["loss.infonce_weight"]):
            assert "loss.infonce_start" in values, arm


def test_rescoring_with_another_probe_size_keeps_the_first_scores():
    """--probe-clips N writes beside scores.json, so a rescored run keeps its first numbers."""
    assert defaults_sweep.scores_name(128) == "scores.json"
    assert defaults_sweep.scores_name(384) == "scores_probe384.json"


def test_label_focus_reads_the_named_object_and_the_agent_at_their_cells(monkeypatch):
    """A label map with all its mass on the named object's cell scores a lift of N on it and
    0 on the scene's other objects; one on the agent's cell scores N on the agent mask."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    import groundlam.focus
    from groundlam import GroundLAMConfig
    from groundlam.data.synthetic import SyntheticConfig, generate_episode, simulate

    world = SyntheticConfig(num_episodes=2, episode_length=8, image_size=64, seed=3)
    starts = [(1, 2), (0, 0)]
    frames, masks = [], []
    for row, start in starts:
        episode = generate_episode(row, world, distracted=False)
        frames.append(np.stack(episode["frames"][start:start + 4]))
        masks.append(np.stack(episode["agent_mask"][start:start + 4]).astype(bool))
    test = SimpleNamespace(frames=np.stack(frames), agent_mask=np.stack(masks),
                           latents=SimpleNamespace(labels=["a", "b"]))
    model = SimpleNamespace(config=GroundLAMConfig(image_size=64, patch_size=8))

    def on(cells_of):
        def label_focus(model, frames, labels):
            maps = torch.zeros(len(frames), 4, 64)
            for clip, (row, start) in enumerate(starts):
                for t in range(4):
                    y, x = cells_of(simulate(row, world), start + t)
                    maps[clip, t, y * 8 + x] = 1.0
            return maps
        return label_focus

    named = on(lambda state, t: state.object_cells[t, state.target_object])
    monkeypatch.setattr(groundlam.focus, "label_focus", named)
    scores = defaults_sweep._label_focus(model, test, range(2), starts, world)
    assert scores["label_focus_target_lift"] == 64.0
    assert scores["label_focus_other_object_lift"] == 0.0
    agent = on(lambda state, t: state.agent_cells[t])
    monkeypatch.setattr(groundlam.focus, "label_focus", agent)
    scores = defaults_sweep._label_focus(model, test, range(2), starts, world)
    # written out: the share of the agent's mask inside its cell, over the mask's share of a frame
    inside, cover = [], []
    for clip, (row, start) in enumerate(starts):
        for t in range(4):
            y, x = simulate(row, world).agent_cells[start + t]
            mask = test.agent_mask[clip, t]
            inside.append(mask[y * 8:(y + 1) * 8, x * 8:(x + 1) * 8].sum() / 64)
            cover.append(mask.mean())
    assert scores["label_focus_lift"] == pytest.approx(np.mean(inside) / np.mean(cover))
    assert scores["label_focus_lift"] > 20  # the agent's cell, not anywhere else
