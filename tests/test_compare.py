"""``evals/compare.py``: the comparison table, end to end on the smoke preset, and resuming."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evals import compare

ROOT = Path(__file__).resolve().parent.parent


def test_summary_and_cells_read_the_eval_metrics():
    assert compare.summarise([0.5, None, 0.1, float("nan"), 0.3]) == {
        "median": 0.3, "min": 0.1, "max": 0.5, "n": 3}
    assert compare.summarise([None]) is None
    results = {"action_probe": {"actions": "continuous", "motion_linear": {"nmse": 0.4}},
               "retrieval": {"top1": 0.75}, "retrieval_no_motion": {"top1": 0.25},
               "camera_shift": {"mean_ratio": 0.1}, "controllability": {"delta_psnr": 1.5}}
    assert compare.cell_values(results) == {
        "probe_linear": 0.4, "retrieval_top1": 0.75, "no_motion_top1": 0.25,
        "camera_shift_ratio": 0.1, "focus_lift_motion": None, "focus_lift": None,
        "controllability": 1.5, "probe_latent_task_time": None, "probe_task_time": None,
        "probe_pixels": None, "probe_current_frame": None, "probe_ceiling": None}


@pytest.mark.slow
def test_smoke_preset_writes_the_table_and_skips_finished_runs(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["--preset", "smoke", "--out", str(out), "--runs", str(runs)]
    assert compare.main(argv) == 0
    progress = capsys.readouterr().err
    assert progress.count("trained to step 5") == 2, progress

    results = json.loads((out / "results" / "compare_smoke.json").read_text())
    assert results["rows"] == ["reconstruction_only", "groundlam"]
    assert results["seeds"] == [0] and results["steps"] == 5 and not results["failures"]
    assert results["columns"] == list(compare.METRICS)
    table = results["table"]["synthetic"]
    assert list(table) == ["reconstruction_only", "groundlam"]
    for entry in table.values():
        assert [run["seed"] for run in entry["runs"]] == [0]
        for rendering in ("clean", "distracted"):
            for column in ("probe_linear", "retrieval_top1", "no_motion_top1",
                           "camera_shift_ratio", "controllability"):
                assert entry["summary"][f"{rendering}/{column}"]["n"] == 1
        assert 0.0 <= entry["summary"]["clean/probe_linear"]["median"] <= 1.0
    markdown = (out / "RESULTS.md").read_text()
    assert "## synthetic, clean" in markdown and "## synthetic, distracted" in markdown
    for label, _ in compare.METRICS.values():
        assert label in markdown
    assert "| reconstruction_only |" in markdown and "| groundlam |" in markdown
    assert "--preset smoke" in markdown and results["git_commit"] in markdown
    assert results["train_rendering"] == "distracted" and results["extra_overrides"] == []
    assert "trained on their distracted training corpus." in markdown
    # runs trained clean and with --set say so in their own table
    compare.write_results({**results, "train_rendering": "clean",
                           "extra_overrides": ["loss.change_weight=0.5"]}, tmp_path / "clean")
    clean = (tmp_path / "clean" / "RESULTS.md").read_text()
    assert "trained on their clean training corpus; every run also had " \
           "`loss.change_weight=0.5`." in clean
    assert (out / "results" / "compare_smoke_probe.png").stat().st_size > 0
    for row in ("reconstruction_only", "groundlam"):  # the baseline and the best (only) row
        overlay = out / "results" / "compare_smoke_focus" / f"synthetic_{row}_seed0.png"
        assert overlay.stat().st_size > 0
        assert f"(results/compare_smoke_focus/synthetic_{row}_seed0.png)" in markdown

    notes = f"\n{compare.NOTES_MARKER}\n## What it means\n\nWritten by hand.\n"
    (out / "RESULTS.md").write_text(markdown + notes)

    # the second invocation, run as a file, trains and evaluates nothing
    metrics = runs / "synthetic" / "groundlam" / "seed0" / "eval" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    again = subprocess.run([sys.executable, "-m", "evals.compare", *argv], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 of 2 runs already finished: skipped" in again.stderr
    assert "trained" not in again.stderr
    assert metrics.stat().st_mtime_ns == before
    assert json.loads((out / "results" / "compare_smoke.json").read_text())["table"] == {
        "synthetic": table}
    rewritten = (out / "RESULTS.md").read_text()  # the table again, the notes kept once
    assert rewritten.count("Written by hand.") == 1 and rewritten.endswith(notes.lstrip("\n"))
    assert "| groundlam |" in rewritten

    # an evaluation lost after training finished: evaluated again, not trained again
    metrics.unlink()
    capsys.readouterr()
    assert compare.main(argv) == 0
    progress = capsys.readouterr().err
    assert "groundlam seed 0: already trained, evaluated in" in progress, progress
    assert "trained to step" not in progress and metrics.is_file()


def test_best_row_reads_the_probe_direction():
    def entry(probe, focus, score="balanced_accuracy"):
        return {"probe_score": score, "summary": {
            "distracted/probe_linear": {"median": probe}, "distracted/focus_lift":
            {"median": 2.0} if focus else None}}

    table = {"reconstruction_only": entry(0.9, True), "a": entry(0.5, True),
             "b": entry(0.7, True), "conv": entry(0.8, False)}
    assert compare.best_row(table, "distracted") == "conv"  # the baseline is never "best"
    assert compare.best_row(table, "distracted", having="focus_lift") == "b"
    nmse = {row: {**value, "probe_score": "nmse"} for row, value in table.items()}
    assert compare.best_row(nmse, "distracted") == "a"  # lower normalised MSE is better
    assert compare.best_row({"reconstruction_only": entry(0.9, True)}, "distracted") is None


def test_presets_plan_rows_per_dataset():
    cpu = compare.PRESETS["cpu"]
    rows = compare.rows_of(cpu, ["synthetic", "babyai", "metaworld"])
    assert [row.name for row in rows["synthetic"]] == list(compare.ALL_ROWS)
    assert [row.name for row in rows["babyai"]] == ["reconstruction_only", "groundlam"]
    asked = compare.rows_of(cpu, ["metaworld"], ["groundlam", "few_actions"])
    assert [row.name for row in asked["metaworld"]] == ["groundlam", "few_actions"]
    specs = {"metaworld": {"train": "T", "clean": "C", "distracted": "D"}}
    planned = compare.plan_runs(cpu, asked, [0, 1], Path("runs"), specs, 10)
    assert [(run.row.name, run.seed) for run in planned] == [
        ("groundlam", 0), ("groundlam", 1), ("few_actions", 0), ("few_actions", 1)]
    few = planned[2]
    # Meta-World's actions are 4-d continuous: the action head regresses them
    assert "model.num_actions=4" in few.overrides and "data.train=T" in few.overrides
    assert [name for name, _, _ in few.evaluations] == ["clean", "distracted"]
    # --set: overrides on every run, after the row's own, so they win
    extra = compare.plan_runs(cpu, asked, [0], Path("runs"), specs, 10,
                              ("loss.action_weight=0.5",))
    assert extra[1].overrides.index("loss.action_weight=0.5") > extra[1].overrides.index(
        "loss.action_weight=1.0")
    with pytest.raises(SystemExit):
        compare.main(["--preset", "smoke", "--set", "model.motion_dim", "--dry-run"])


def test_clean_training_corpus_is_generated_clean_into_its_own_folder(tmp_path, monkeypatch):
    commands = []
    def generate(command, log, what):  # stands in for groundlam datagen: records the command
        commands.append(command)
        Path(command[command.index("--out") + 1]).mkdir(parents=True)

    monkeypatch.setattr(compare, "_run_logged", generate)
    cpu = compare.PRESETS["cpu"]
    clean = compare.build_dataset(compare.DATASETS["babyai"], cpu, tmp_path, "clean")
    distracted = compare.build_dataset(compare.DATASETS["babyai"], cpu, tmp_path)
    assert Path(clean["train"]).name == "clean" and "train_clean" in clean["train"]
    assert Path(distracted["train"]).name == "distracted"
    assert Path(clean["train"]).parent != Path(distracted["train"]).parent
    assert clean["clean"] == distracted["clean"]  # one held-out corpus for both
    trained = [c for c in commands if "--seed" in c and c[c.index("--seed") + 1] == "0"]
    assert [c[c.index("--variant") + 1] for c in trained] == ["clean", "distracted"]
    with pytest.raises(ValueError, match="train_rendering"):
        compare.build_dataset(compare.DATASETS["babyai"], cpu, tmp_path, "blurry")


@pytest.mark.slow  # generates BabyAI and Meta-World corpora, trains and scores: ~1 min
def test_generated_datasets_train_and_score_clean_and_distracted(tmp_path):
    """One row a dataset (the groundlam model with its action head: the row with the most
    parts; several rows in a table are the synthetic smoke test's)."""
    # find_spec, not importorskip: importing mujoco here, before the generator sets MUJOCO_GL,
    # would leave this process on GLFW, which cannot render without a display
    if not all(importlib.util.find_spec(name) for name in ("minigrid", "metaworld", "mujoco")):
        pytest.skip("needs the babyai and metaworld extras")
    out, runs = tmp_path / "out", tmp_path / "runs"
    assert compare.main(["--preset", "smoke", "--out", str(out), "--runs", str(runs),
                         "--data-cache", str(tmp_path / "cache"), "--datasets",
                         "babyai,metaworld", "--rows", "few_actions"]) == 0
    results = json.loads((out / "results" / "compare_smoke.json").read_text())
    assert results["datasets"] == ["babyai", "metaworld"] and not results["failures"]
    for name, score in (("babyai", "balanced_accuracy"), ("metaworld", "nmse")):
        table = results["table"][name]
        assert list(table) == ["few_actions"]
        for entry in table.values():
            assert entry["probe_score"] == score
            for rendering in ("clean", "distracted"):
                assert entry["summary"][f"{rendering}/probe_linear"]["n"] == 1
    logged = (runs / "metaworld" / "few_actions" / "seed0" / "metrics.jsonl").read_text()
    assert '"actions": ' in logged  # the continuous action head trained
    markdown = (out / "RESULTS.md").read_text()
    assert "## babyai, distracted" in markdown and "## metaworld, clean" in markdown
    assert "MSE / action variance" in markdown
