"""The defaults sweep's bookkeeping (its runs are measurements, not tests)."""

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
