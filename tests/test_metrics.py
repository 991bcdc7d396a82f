import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from groundlam.evaluation.evaluate import can_fork
from groundlam.evaluation.metrics import (
    action_probe_scores,
    balanced_accuracy,
    camera_shift_sensitivity,
    controllability,
    disentanglement_matrix,
    focus_precision,
    frame_pair_features,
    no_change_ceiling,
    no_change_transitions,
    psnr,
    retrieval_with_chance,
    shift_clips,
    task_time_features,
)

from .conftest import TINY

needs_fork = pytest.mark.skipif(not can_fork(),
                                reason="renderings run in forked processes on Linux only")


def one_hot(actions: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[actions]


def test_balanced_accuracy_ignores_class_frequency():
    truth = np.array([0] * 9 + [1])
    assert balanced_accuracy(truth, np.zeros(10, int)) == pytest.approx(0.5)  # majority: chance
    assert balanced_accuracy(truth, truth) == 1.0
    with pytest.raises(ValueError, match="equal"):
        balanced_accuracy(truth, truth[:3])


@pytest.mark.parametrize("probe", ["linear", "mlp"])
def test_probe_on_the_actions_themselves_is_perfect(probe):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 5, 600), rng.integers(0, 5, 300)
    scores = action_probe_scores(one_hot(train, 5), train, one_hot(test, 5), test, probe=probe)
    assert scores == {"balanced_accuracy": 1.0, "chance": 0.2}


def test_probe_on_noise_scores_chance():
    rng = np.random.default_rng(1)
    # skewed like BabyAI: a majority action a probe on noise should not get credit for
    train, test = (rng.choice(4, n, p=[0.6, 0.2, 0.1, 0.1]) for n in (3000, 3000))
    scores = action_probe_scores(rng.normal(size=(3000, 8)), train, rng.normal(size=(3000, 8)),
                                 test)
    assert abs(scores["balanced_accuracy"] - 0.25) < 0.04


@pytest.mark.parametrize("probe", ["linear", "mlp"])
def test_continuous_probe_normalised_mse(probe):
    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(2000, 2)), rng.normal(size=(1000, 2))
    exact = action_probe_scores(train, train, test, test, probe=probe)
    assert exact["nmse"] < 0.02 and exact["r2"] > 0.98
    noise = action_probe_scores(rng.normal(size=(2000, 6)), train, rng.normal(size=(1000, 6)),
                                test, probe=probe)
    assert abs(noise["nmse"] - 1.0) < 0.1 and abs(noise["r2"]) < 0.1


def test_linear_regression_probe_does_not_overfit_wide_features():
    """More features than fit samples (a raw-pixel probe: 1536 features, ~400 transitions): the
    ridge penalty chosen on the fit set keeps a probe on noise near NMSE 1 (at a fixed alpha of
    1 it scored about 2) and still reads a signal spread over every feature."""
    rng = np.random.default_rng(3)
    y_fit, y_test = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    noise = action_probe_scores(rng.normal(size=(400, 1536)), y_fit,
                                rng.normal(size=(400, 1536)), y_test)
    assert noise["nmse"] < 1.1
    mixing = rng.normal(size=(4, 1536))
    signal = action_probe_scores(y_fit @ mixing + rng.normal(size=(400, 1536)), y_fit,
                                 y_test @ mixing + rng.normal(size=(400, 1536)), y_test)
    assert signal["nmse"] < 0.2


def test_continuous_probe_rejects_constant_actions():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="constant"):
        action_probe_scores(x, x[:, :1], x, np.zeros((20, 1)))


def test_probe_indicator_columns_are_checked():
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match="indicators=4"):
        action_probe_scores(x, y, x, y, indicators=4)
    # all columns indicators: nothing to standardise, still a probe
    onehot = np.eye(2)[y]
    assert action_probe_scores(onehot, y, onehot, y, indicators=2)["balanced_accuracy"] == 1.0


def test_frame_pair_features_order_and_change():
    clips = np.zeros((2, 3, 8, 8, 3), np.uint8)
    clips[1, 2] = 255  # clip 1: the last frame turns white
    features = frame_pair_features(clips, size=2)
    assert features.shape == (4, 2 * 2 * 2 * 3)
    np.testing.assert_allclose(features[3, 12:], 1.0)  # clip 1, transition 1: change of +1
    np.testing.assert_allclose(features[:3], 0.0)
    current = frame_pair_features(clips, size=2, change=False)  # frame t alone
    assert current.shape == (4, 2 * 2 * 3)
    np.testing.assert_allclose(current, features[:, :12])
    clips[0, 1] = 255  # clip 0, frame 1: transition 1's frame t, transition 0's frame t+1
    current = frame_pair_features(clips, size=2, change=False)
    np.testing.assert_allclose(current[1], 1.0)
    np.testing.assert_allclose(current[[0, 2, 3]], 0.0)


def clips_with_still_transitions(still: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 clips (N, T, 8, 8, 3) whose transition t repeats frame t where ``still`` (N, T-1)."""
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 256, (still.shape[0], still.shape[1] + 1, 8, 8, 3), dtype=np.uint8)
    for i, t in zip(*np.nonzero(still), strict=True):
        clips[i, t + 1] = clips[i, t]
    return clips


def test_no_change_ceiling_on_clips_with_identical_frames():
    # 3 clips of 6 frames: class 2 (10 transitions, 3 unchanged), class 0 (2, both unchanged),
    # class 1 (3, all changing)
    actions = np.array([[2, 2, 0, 2, 1], [2, 2, 2, 0, 1], [2, 2, 2, 2, 1]])
    still = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 0]], bool)
    found = no_change_transitions(clips_with_still_transitions(still))
    np.testing.assert_array_equal(found, still.reshape(-1))  # clip-major, like the probes' rows
    ceiling = no_change_ceiling(actions.reshape(-1), found)
    assert ceiling["no_change_share"] == pytest.approx(5 / 15) and ceiling["transitions"] == 15
    # saying 0 on every unchanged transition: recalls 1 (class 0), 1 (class 1), 7/10 (class 2);
    # the most common unchanged action, 2, would give 0, 1, 1: a worse 2/3
    assert ceiling["balanced_accuracy"] == pytest.approx((1 + 1 + 0.7) / 3)
    assert ceiling["no_change_prediction"] == 0
    everything_changes = no_change_ceiling(actions.reshape(-1), np.zeros(15, bool))
    assert everything_changes["balanced_accuracy"] == 1.0
    assert everything_changes["no_change_share"] == 0.0
    # continuous: the oracle says the unchanged transitions' mean action there
    values = np.array([[0.0], [4.0], [1.0], [3.0]])
    continuous = no_change_ceiling(values, np.array([0, 0, 1, 1], bool))
    assert continuous["nmse"] == pytest.approx(2 / 10) and continuous["r2"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no_change"):
        no_change_ceiling(values, np.zeros(3, bool))


def test_task_time_features_encode_as_fit():
    fit, test = task_time_features(["a", "a", "b"], np.array([0, 1, 0]), ["b", "c"],
                                   np.array([1, 0]))
    assert fit.shape == (3, 2 + 2 + 3)  # labels a b, steps 0 1, pairs (a 0) (a 1) (b 0)
    assert fit.sum(axis=1).tolist() == [3, 3, 3]
    # "b" at step 1: label b and step 1 are known, the pair is not; "c" at 0: only the step
    assert test.sum(axis=1).tolist() == [2, 1]


def scripted_clip_set(episodes_per_label: int, labels: Sequence[str], table: np.ndarray,
                      seed: int, clip_length: int = 4, episode_length: int = 12):
    """A ClipSet of random motion latents whose actions are ``table[label, step]``."""
    from groundlam.evaluation.evaluate import ClipSet, Latents

    rng = np.random.default_rng(seed)
    starts = range(0, episode_length - clip_length + 1, clip_length)
    clips = [(k, start) for k in range(len(labels)) for _ in range(episodes_per_label)
             for start in starts]
    steps = np.array([start + np.arange(clip_length - 1) for _, start in clips])  # (N, T-1)
    actions = table[[k for k, _ in clips]][np.arange(len(clips))[:, None], steps]
    n = len(clips)
    latents = Latents(rng.normal(size=(n, clip_length - 1, 8)), np.zeros((n, 4)),
                      np.zeros((n, 4)), [labels[k] for k, _ in clips])
    return ClipSet(latents, np.zeros((n, clip_length, 8, 8, 3), np.uint8), actions, None, None,
                   None, steps)


def test_task_and_time_predict_a_scripted_expert_a_random_latent_does_not():
    from groundlam.evaluation.evaluate import _per_transition, _task_time_probes

    labels = [f"task {k}" for k in range(8)]
    table = np.random.default_rng(0).integers(0, 6, (8, 12))  # action of (label, step)
    fit = scripted_clip_set(4, labels, table, seed=1)
    test = scripted_clip_set(2, labels, table, seed=2)
    probes = _task_time_probes(fit, test)
    assert probes["task_time_linear"]["balanced_accuracy"] > 0.98
    assert probes["motion_task_time_linear"]["balanced_accuracy"] > 0.9
    assert probes["task_labels_seen"] == 1.0
    latent_only = action_probe_scores(
        _per_transition(fit.latents.motion), _per_transition(fit.actions),
        _per_transition(test.latents.motion), _per_transition(test.actions))
    assert latent_only["balanced_accuracy"] < 0.45  # random latents: near chance (1/6)
    # tasks never seen in fitting: the time step alone cannot name the action
    unseen = scripted_clip_set(2, [f"other {k}" for k in range(8)], table, seed=3)
    probes = _task_time_probes(fit, unseen)
    assert probes["task_labels_seen"] == 0.0
    assert probes["task_time_linear"]["balanced_accuracy"] < 0.6


def test_task_and_time_features_do_not_drown_a_latent_that_knows_the_action():
    # As on BabyAI: imbalanced actions ("forward" 64%) that the task and time step do not
    # predict, most (label, step) one-hot columns set on a row or two of the fit set, and a
    # wide latent that knows the action. Standardised, those columns let the logistic probe
    # memorise the fit set: [latent, task, time] scored 0.28 here (0.46 on BabyAI) where the
    # latent alone scored 0.55 (0.75).
    from groundlam.evaluation.evaluate import _per_transition, _task_time_probes

    def informative(seed: int):
        table = np.random.default_rng(seed).choice(4, size=(64, 24), p=[0.15, 0.15, 0.64, 0.06])
        clips = scripted_clip_set(1, [f"task {k}" for k in range(64)], table, seed,
                                  episode_length=24)
        latents = np.random.default_rng(seed + 1).normal(size=(*clips.actions.shape, 128))
        latents[..., :4] += 1.5 * np.eye(4)[clips.actions]
        clips.latents.motion = latents
        return clips

    fit, test = informative(1), informative(2)
    latent_only = action_probe_scores(
        _per_transition(fit.latents.motion), _per_transition(fit.actions),
        _per_transition(test.latents.motion), _per_transition(test.actions))
    probes = _task_time_probes(fit, test)
    assert latent_only["balanced_accuracy"] > 0.45  # chance 0.25
    assert probes["task_time_linear"]["balanced_accuracy"] < 0.35  # the tables differ by seed
    assert probes["motion_task_time_linear"]["balanced_accuracy"] > (
        latent_only["balanced_accuracy"] - 0.07)


def test_retrieval_with_exact_embeddings_is_perfect():
    labels = [f"task {i}" for i in range(8)]
    text = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 8)))[0].T  # (8, 16) orthonormal
    clips = [labels[i % 8] for i in range(40)]
    task = text[[i % 8 for i in range(40)]]
    scores = retrieval_with_chance(task, clips, text, labels)
    assert scores["top1"] == 1.0 and scores["top5"] == 1.0
    assert scores["chance_top1"] == 1 / 8 and scores["chance_top5"] == 5 / 8


def test_disentanglement_matrix_separates_sources():
    rng = np.random.default_rng(3)

    def split(n):
        actions, shift = rng.integers(0, 4, n), rng.normal(size=(n, 2))
        return {"sources": {"motion": one_hot(actions, 4) + 0.01 * rng.normal(size=(n, 4)),
                            "task": shift + 0.01 * rng.normal(size=(n, 2))},
                "targets": {"action": actions, "camera_shift": shift,
                            "background_shift": np.zeros(n)}}

    result = disentanglement_matrix(split(800), split(400))
    cells = result["cells"]
    assert cells["motion"]["action"] == 1.0 and abs(cells["task"]["action"] - 0.25) < 0.08
    assert cells["task"]["camera_shift"] > 0.99 and cells["motion"]["camera_shift"] < 0.05
    assert cells["motion"]["background_shift"] is None  # constant: undefined, not 0
    assert result["score"] == {"action": "balanced_accuracy", "camera_shift": "r2",
                               "background_shift": "r2"}
    assert result["scored"] == {"action": 400, "camera_shift": 400, "background_shift": 0}


def test_disentanglement_scores_discrete_targets_on_classes_the_probe_saw():
    train = {"sources": {"motion": one_hot(np.array([0, 1] * 20), 3)},
             "targets": {"label": np.array(["a", "b"] * 20)}}
    test = {"sources": {"motion": one_hot(np.array([0, 1, 2] * 5), 3)},
            "targets": {"label": np.array(["a", "b", "c"] * 5)}}  # "c" never seen in fitting
    result = disentanglement_matrix(train, test)
    assert result["cells"]["motion"]["label"] == 1.0 and result["scored"]["label"] == 10
    assert result["chance"]["label"] == 0.5


def test_disentanglement_takes_a_known_cell_only_where_it_scores_every_sample():
    """The evaluation passes its motion -> action probe in as a known cell instead of fitting
    it twice; a cell that leaves test samples out (a class the probe never saw) is fit."""
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, 300)
    train = {"sources": {"motion": one_hot(actions, 3) + 0.3 * rng.normal(size=(300, 3))},
             "targets": {"action": actions}}
    test_actions = rng.integers(0, 3, 200)
    test = {"sources": {"motion": one_hot(test_actions, 3) + 0.3 * rng.normal(size=(200, 3))},
            "targets": {"action": test_actions}}
    fitted = disentanglement_matrix(train, test)["cells"]["motion"]["action"]
    probe = action_probe_scores(train["sources"]["motion"], actions, test["sources"]["motion"],
                                test_actions, "linear")
    assert probe["balanced_accuracy"] == fitted  # what the evaluation passes in is that cell
    known = {("motion", "action"): {"balanced_accuracy": 0.123, "chance": 1 / 3}}
    assert disentanglement_matrix(train, test, known=known)["cells"]["motion"]["action"] == 0.123
    unseen = {"sources": {"motion": np.concatenate([test["sources"]["motion"], np.eye(4)[:, :3]])},
              "targets": {"action": np.concatenate([test_actions, [7, 7, 7, 7]])}}
    result = disentanglement_matrix(train, unseen, known=known)
    assert result["cells"]["motion"]["action"] == fitted and result["scored"]["action"] == 200


def moving_square_clips(n: int, t: int = 4, size: int = 24, seed: int = 0):
    """A white 3x3 square taking one of 4 unit steps a frame on black, well inside the frame."""
    rng = np.random.default_rng(seed)
    steps = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)])
    actions = rng.integers(0, 4, (n, t - 1))
    clips = np.zeros((n, t, size, size, 3), np.uint8)
    for i in range(n):
        x, y = size // 2, size // 2
        for k in range(t):
            clips[i, k, y - 1:y + 2, x - 1:x + 2] = 255
            if k < t - 1:
                x, y = x + steps[actions[i, k]][0], y + steps[actions[i, k]][1]
    return clips, actions


def centroids(clips: np.ndarray) -> np.ndarray:
    weight = clips[..., 0].astype(np.float64)  # (N, T, H, W)
    ys, xs = np.mgrid[:clips.shape[2], :clips.shape[3]]
    total = weight.sum(axis=(2, 3))
    return np.stack([(weight * xs).sum(axis=(2, 3)) / total,
                     (weight * ys).sum(axis=(2, 3)) / total], axis=-1)  # (N, T, 2)


def test_shift_clips_moves_content_without_wrapping():
    clips, _ = moving_square_clips(1)
    moved = shift_clips(clips, 2, -1)
    np.testing.assert_allclose(centroids(moved) - centroids(clips), [[[2, -1]] * 4])
    assert shift_clips(clips, 0, 0) is not clips and (shift_clips(clips, 0, 0) == clips).all()


def test_camera_shift_sensitivity_on_constructed_encoders():
    clips, actions = moving_square_clips(32)
    # displacement of the square: the action itself, untouched by moving the camera
    displacement = camera_shift_sensitivity(lambda c: np.diff(centroids(c), axis=1), clips,
                                            actions)
    assert displacement["action_distance"] > 1.0
    assert all(r < 1e-9 for r in displacement["ratio"].values())
    # position of the square after the step: moves exactly s px under an s px shift
    position = camera_shift_sensitivity(lambda c: centroids(c)[:, 1:], clips, actions)
    for s in (1, 2, 3, 4):
        assert position["shift_distance"][s] == pytest.approx(s)
    assert position["ratio"][4] > position["ratio"][1] > 0.1
    # latents the caller has already (groundlam eval's scored clips) stand in for encode(clips)
    encode = calls_counted(lambda c: centroids(c)[:, 1:])
    given = camera_shift_sensitivity(encode, clips, actions, latents=centroids(clips)[:, 1:])
    assert given == position and encode.calls == 4  # the four shifts only
    with pytest.raises(ValueError, match="latents must be"):
        camera_shift_sensitivity(encode, clips, actions, latents=centroids(clips))


def calls_counted(function):
    def counted(*args):
        counted.calls += 1
        return function(*args)
    counted.calls = 0
    return counted


def test_focus_precision_known_answers():
    masks = np.zeros((3, 8, 8), bool)
    masks[:, 2:4, 2:6] = True  # 8 of 64 pixels
    exact = focus_precision(masks.astype(float), masks)
    assert exact["precision"] == 1.0 and exact["uniform"] == 0.125 and exact["lift"] == 8.0
    uniform = focus_precision(np.ones((3, 8, 8)), masks)
    assert uniform["precision"] == pytest.approx(0.125) and uniform["lift"] == pytest.approx(1.0)
    off = focus_precision(1.0 - masks, masks)
    assert off["precision"] == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        focus_precision(np.ones((1, 8, 8)), np.zeros((1, 8, 8), bool))


def test_controllability_needs_a_decoder_that_reads_the_latent():
    torch.manual_seed(0)
    frames = torch.rand(6, 4, 3, 8, 8) * 2 - 1  # (B, T, C, H, W)
    latents = (frames[:, 1:] - frames[:, :-1]).flatten(2)  # the exact change, (B, T-1, 192)

    def uses_latent(current, z):
        return current + z.reshape(current.shape)

    def ignores_latent(current, z):
        return current

    used = controllability(uses_latent, frames, latents)
    assert used["delta_psnr"] > 20 and used["psnr_inferred"] > 90
    ignored = controllability(ignores_latent, frames, latents)
    assert ignored["delta_psnr"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="2 clips"):
        controllability(uses_latent, frames[:1], latents[:1])
    # a prediction the caller made already with the inferred latents is not decoded again
    decode = calls_counted(uses_latent)
    given = controllability(decode, frames, latents, inferred=uses_latent(frames[:, :-1], latents))
    assert given == used and decode.calls == 1  # the other clips' latents only
    with pytest.raises(ValueError, match="inferred must be"):
        controllability(decode, frames, latents, inferred=frames)


def latent_reading_model(variant: dict, scale: float):
    """A tiny GroundLAM (``variant`` on ``TINY``) in eval mode whose decoder reads the latent:
    its weights moved by ``scale`` standard normals (a fresh one's head is zero)."""
    from groundlam import GroundLAM, GroundLAMConfig

    torch.manual_seed(0)
    model = GroundLAM(GroundLAMConfig(**{**TINY, **variant})).eval()
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return model


@pytest.mark.parametrize("variant", [dict(decoder_target="flow"), dict(num_camera_slots=1),
                                     dict(decoder_target="flow", num_camera_slots=1),
                                     dict(decoder_history=True),
                                     dict(decoder_target="flow", num_camera_slots=1,
                                          decoder_history=True)])
def test_controllability_scores_flow_and_camera_decoders_on_what_they_predict(variant):
    """A flow decoder is scored against flow, a camera model's decoder gets warped frames, a
    decoder with history gets the change into frame t: with the inferred latents, the score is
    the training prediction's own PSNR."""
    pytest.importorskip("cv2")
    from groundlam.evaluation.evaluate import _controllability
    from groundlam.losses.flow import optical_flow
    from groundlam.video import to_model_input

    model = latent_reading_model(variant, 0.05)
    clips = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32, 3), dtype=np.uint8)
    scores = _controllability(model, clips)
    x = to_model_input(torch.from_numpy(clips))
    with torch.no_grad():
        output = model(x)
    target = optical_flow(x) if variant.get("decoder_target") == "flow" else x[:, 1:]
    expected = psnr(output.prediction, target).mean()
    assert scores["psnr_inferred"] == pytest.approx(float(expected), abs=1e-3)
    # the other clip's latents decoded as training would: warped frames, history, camera flow
    current = x[:, :-1] if output.warped is None else output.warped
    with torch.no_grad():
        own = model.decoder(current, output.latents.motion, output.history)
        other = model.decoder(current, output.latents.motion.roll(1, dims=0), output.history)
    other = other + (output.prediction - own)  # the camera's share of the flow; else zero
    assert scores["psnr_other"] == pytest.approx(float(psnr(other, target).mean()), abs=1e-3)
    assert scores["delta_psnr"] != 0.0


@pytest.mark.parametrize("decoded, variant", [(None, {}), (5, {}), (3, {}), (1, {}), (0, {}),
                                              (3, dict(decoder_target="flow", num_camera_slots=1,
                                                       decoder_history=True))])
def test_encoding_with_controllability_keeps_the_latents_and_scores_like_its_own_pass(
        decoded, variant):
    """``collect`` scores controllability on the forward pass that encodes the clips: the
    latents are those of the encoder alone, the scores those of ``_controllability`` on the
    first clips (one batch of 4 decoded whole and scored on 3 of them included; a flow decoder
    with camera slots and history too); None under 2."""
    from groundlam.config import load_config
    from groundlam.evaluation.evaluate import _clips, _controllability, _plan, collect

    if variant.get("decoder_target") == "flow":
        pytest.importorskip("cv2")
    tiny_model = latent_reading_model(variant, 0.3)
    config = load_config(None, SYNTHETIC_TINY)
    _, plan = _plan("synthetic", config, True, tiny_model)
    episodes = plan[1][2]  # distracted: every transition changes pixels
    clips = _clips(episodes, config, tiny_model, "scored")
    plain = collect(tiny_model, clips, episodes, max_clips=7, batch_size=4)
    scored = collect(tiny_model, clips, episodes, max_clips=7, batch_size=4,
                     controllability_clips=decoded)
    assert plain.controllability is None
    for name in ("motion", "task", "still_task"):
        np.testing.assert_allclose(getattr(scored.latents, name), getattr(plain.latents, name),
                                   atol=1e-6)
    expected = _controllability(tiny_model, plain.frames[:decoded], batch_size=4)
    if expected is None:
        assert decoded in (0, 1) and scored.controllability is None
        return
    assert set(scored.controllability) == {"psnr_inferred", "psnr_other", "delta_psnr"}
    for key, value in expected.items():
        assert scored.controllability[key] == pytest.approx(value, abs=1e-4)
    assert abs(scored.controllability["delta_psnr"]) > 1e-3


# ---------------------------------------------------------------- groundlam eval, end to end

SYNTHETIC_TINY = ["data.eval_episodes=4", "data.clip_length=6", "data.synthetic.image_size=32",
                  "data.synthetic.episode_length=12"]
PROBE_KEYS = {"actions", "motion_linear", "motion_mlp", "task_time_linear",
              "motion_task_time_linear", "task_labels_seen", "pixels_linear",
              "current_frame_linear", "ceiling"}
VARIANT_KEYS = {"fit_clips", "test_clips", "action_probe", "retrieval", "retrieval_no_motion",
                "disentanglement", "camera_shift", "controllability", "focus", "plots",
                "timings_s"}


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "run" / "final")
    return tmp_path / "run" / "final"


@pytest.mark.slow  # generates episodes, loads the text encoder: ~10-20 s
def test_eval_cli_end_to_end_on_synthetic(tmp_path, tiny_checkpoint):
    from groundlam.evaluation.evaluate import STAGES, main

    out = tmp_path / "eval"
    assert main(["--checkpoint", str(tiny_checkpoint), "--data", "synthetic", "--out", str(out),
                 "--max-clips", "8", "--focus-clips", "2", "--no-progress", *SYNTHETIC_TINY,
                 "data.synthetic.distractors.camera_shake=1.0",
                 "data.synthetic.distractors.background=1.0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["held_out"] is True and list(metrics["variants"]) == ["clean",
                                                                                  "distracted"]
    assert metrics["split"]["trained_on"] is None  # no run config beside the checkpoint
    ceilings = [metrics["variants"][n]["action_probe"]["ceiling"] for n in ("clean", "distracted")]
    assert ceilings[0] == {**ceilings[1], "no_change_from": "scored frames"}
    for name, results in metrics["variants"].items():
        assert set(results) == VARIANT_KEYS
        assert set(results["timings_s"]) == set(STAGES)  # where its time went
        assert results["fit_clips"] == results["test_clips"] == 8  # 4 episodes x 2 clips
        probe = results["action_probe"]
        assert probe["actions"] == "discrete"
        assert set(probe) == PROBE_KEYS
        assert 0 <= probe["motion_linear"]["balanced_accuracy"] <= 1
        for key in ("task_time_linear", "motion_task_time_linear"):
            assert 0 <= probe[key]["balanced_accuracy"] <= 1
        # the clean rendering's no-change transitions, for both renderings
        assert probe["ceiling"]["no_change_from"] == ("scored frames" if name == "clean"
                                                      else "clean rendering")
        assert 0 < probe["ceiling"]["no_change_share"] < 1
        assert probe["ceiling"]["balanced_accuracy"] < 1
        assert set(results["retrieval"]) >= {"top1", "top5", "chance_top1", "chance_top5"}
        cells = results["disentanglement"]["cells"]
        assert set(cells) == {"motion", "task"}
        assert set(cells["motion"]) == {"action", "camera_shift", "background_shift", "label"}
        # clean renderings have no camera motion: undefined, not a score
        assert (cells["motion"]["camera_shift"] is None) == (name == "clean")
        assert set(results["camera_shift"]["ratio"]) == {"1", "2", "3", "4"}
        # a fresh residual decoder's head is zero: it copies frame t whatever the latent
        assert results["controllability"]["delta_psnr"] == pytest.approx(0.0, abs=1e-4)
        focus = results["focus"]
        assert 0 < focus["motion"]["uniform"] < 1 and focus["task"]["maps"]
        assert focus["rollout_task"]["maps"] == focus["task"]["maps"]
        assert focus["rollout_motion"]["uniform"] == pytest.approx(focus["motion"]["uniform"])
        for file in results["plots"] + focus["overlays"] + focus["rollout_overlays"]:
            assert (out / file).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| metric | clean | distracted |" in report and "no-motion control top1" in report
    assert "![clean clean_latents_pca.png](clean_latents_pca.png)" in report
    assert "Warning" not in report and "focus precision, task maps, rollout" in report
    assert "action probe task + time step alone" in report and "ceiling" in report
    assert "clean_focus_rollout_0.png" in report


def _without_timings(metrics: dict) -> dict:
    return {**metrics, "variants": {name: {k: v for k, v in results.items() if k != "timings_s"}
                                    for name, results in metrics["variants"].items()}}


def _assert_same_numbers(got, expected, path: str = "metrics", rel: float = 1e-5) -> None:
    """The same tree of keys, strings, ints and bools; floats within ``rel`` (or 1e-9 apart).

    One torch thread and two need not add a float32 matmul's products in the same order: on an
    AVX2 CPU the latents of the two differ in the last bits, and the distances and focus
    precisions computed from them by about 1e-7 (on an AMX CPU they came out equal)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), path
        for key in expected:
            _assert_same_numbers(got[key], expected[key], f"{path}.{key}", rel)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            _assert_same_numbers(a, b, f"{path}[{i}]", rel)
    elif isinstance(expected, float) and not isinstance(got, bool):
        assert isinstance(got, int | float), path
        assert got == pytest.approx(expected, rel=rel, abs=1e-9, nan_ok=True), path
    else:
        assert type(got) is type(expected) and got == expected, path


@pytest.mark.slow  # two evaluations of both renderings: ~15-30 s
@needs_fork
def test_renderings_side_by_side_give_every_number_of_one_after_the_other(tmp_path,
                                                                          tiny_checkpoint):
    """``processes=2``: each rendering in a forked worker on one torch thread; the numbers of
    metrics.json as in this process (floats to float32 rounding), every stage on the progress
    bar, the workers' generated episodes removed."""
    import tempfile

    from groundlam.evaluation import evaluate

    overrides = [*SYNTHETIC_TINY, "data.synthetic.distractors.sprites=1.0"]
    threads = torch.get_num_threads()
    bars, made = [], {}

    class Bar(evaluate.tqdm):
        def close(self):
            bars.append((self.n, self.total))
            super().close()

    results = {}
    for processes in (1, 2):
        before = set(Path(tempfile.gettempdir()).glob("groundlam-*"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(evaluate, "tqdm", Bar)
            evaluate.evaluate_checkpoint(tiny_checkpoint, "synthetic", tmp_path / str(processes),
                                         overrides=overrides, max_clips=6, focus_clips=1,
                                         processes=processes)
        # every stage of both renderings reaches the bar, the workers' too
        assert bars.pop() == (2 * len(evaluate.STAGES),) * 2
        results[processes] = json.loads((tmp_path / str(processes) / "metrics.json").read_text())
        made[processes] = set(Path(tempfile.gettempdir()).glob("groundlam-*")) - before
    assert torch.get_num_threads() == threads  # the workers' one thread is theirs alone
    _assert_same_numbers(_without_timings(results[2]), _without_timings(results[1]))
    files = {path.name for path in (tmp_path / "1").iterdir()}
    assert files == {path.name for path in (tmp_path / "2").iterdir()} and len(files) > 3
    # episode sets generated in this process stay until it exits (atexit); the workers' went
    # with the command's scratch folder
    assert made[1] and not made[2]


@needs_fork
def test_a_failing_rendering_in_a_worker_raises_in_the_caller(tmp_path, tiny_checkpoint,
                                                              monkeypatch):
    import os

    from groundlam.evaluation import evaluate

    parent = os.getpid()

    def broken(rendering, *args, **kwargs):
        raise KeyError(f"{rendering.name} broke in process {os.getpid()}")

    def killed(rendering, *args, **kwargs):
        os._exit(3)

    monkeypatch.setattr(evaluate._Rendering, "evaluate", broken)
    with pytest.raises(KeyError, match="(clean|distracted) broke in process") as error:
        evaluate.evaluate_checkpoint(tiny_checkpoint, "synthetic", tmp_path / "eval",
                                     overrides=SYNTHETIC_TINY, max_clips=4, progress=False,
                                     processes=2)
    assert str(parent) not in str(error.value)  # raised in a worker, not here
    assert "raised in the worker of rendering" in error.value.__notes__[0]
    monkeypatch.setattr(evaluate._Rendering, "evaluate", killed)
    with pytest.raises(RuntimeError, match="died \\(exit code 3\\)"):
        evaluate.evaluate_checkpoint(tiny_checkpoint, "synthetic", tmp_path / "eval",
                                     overrides=SYNTHETIC_TINY, max_clips=4, progress=False,
                                     processes=2)
    with pytest.raises(ValueError, match="processes=0"):
        evaluate.evaluate_checkpoint(tiny_checkpoint, "synthetic", tmp_path / "eval",
                                     processes=0)


def test_eval_runs_renderings_side_by_side_only_where_it_pays(monkeypatch):
    from groundlam.evaluation import evaluate

    monkeypatch.setattr(evaluate, "can_fork", lambda: True)
    chosen = {}
    for threads in (1, 2, 3, 16):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        chosen[threads] = [evaluate.default_processes(data) for data in ("synthetic", "runs/x")]
    assert chosen == {1: [1, 1], 2: [2, 1], 3: [1, 1], 16: [1, 1]}
    monkeypatch.setattr(evaluate, "can_fork", lambda: False)
    assert evaluate.default_processes("synthetic") == 1


@pytest.mark.slow  # generates episodes, loads the text encoder: ~10-20 s
def test_eval_on_saved_continuous_actions_flags_training_data(tmp_path, tiny_checkpoint):
    from groundlam.data.synthetic import SyntheticConfig, generate_dataset
    from groundlam.evaluation.evaluate import main

    dataset = tmp_path / "episodes"
    episodes = generate_dataset(SyntheticConfig(num_episodes=8, episode_length=7, image_size=32))
    rng = np.random.default_rng(0)  # continuous actions (T-1, 2), like a robot's end effector
    episodes = episodes.remove_columns("actions").add_column(
        "actions", [rng.normal(size=(6, 2)).astype(np.float32).tolist() for _ in episodes])
    episodes.save_to_disk(str(dataset))
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  train: {dataset}\n  clip_length: 6\n")
    out = tmp_path / "eval"
    main(["--checkpoint", str(tiny_checkpoint), "--data", str(dataset), "--out", str(out),
          "--config", str(config), "--focus-clips", "1", "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["held_out"] is False  # the run trained on these episodes
    assert list(metrics["variants"]) == ["eval"]
    results = metrics["variants"]["eval"]
    assert results["fit_clips"] == results["test_clips"] == 4  # 4 episodes of one clip each
    probe = results["action_probe"]
    assert probe["actions"] == "continuous" and set(probe["motion_linear"]) == {"nmse", "r2"}
    assert set(probe) == PROBE_KEYS
    assert set(probe["task_time_linear"]) == {"nmse", "r2"}
    assert {"nmse", "r2", "no_change_share"} <= set(probe["ceiling"])
    assert results["disentanglement"]["score"]["action"] == "r2"
    assert results["camera_shift"]["reference"] == "different transitions"
    assert "not held-out numbers" in (out / "report.md").read_text()


def test_eval_cli_errors_name_the_input(tmp_path):
    from groundlam.evaluation.evaluate import main

    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "missing"), "--data", "synthetic", "--out",
              str(tmp_path / "out")])


def test_probe_fit_on_the_training_corpus_or_on_half_of_the_scored_one(tmp_path):
    from groundlam.config import load_config
    from groundlam.data.synthetic import SyntheticConfig, generate_dataset
    from groundlam.evaluation.evaluate import _plan

    train, held_out = tmp_path / "train", tmp_path / "held_out"
    generate_dataset(SyntheticConfig(num_episodes=4, episode_length=7, image_size=32)
                     ).save_to_disk(str(train))
    generate_dataset(SyntheticConfig(num_episodes=6, episode_length=7, image_size=32, seed=5)
                     ).save_to_disk(str(held_out))
    config = load_config(None, [f"data.train={train}"])
    split, [(_, fit, scored)] = _plan(str(held_out), config, True, None)
    assert len(fit) == 4 and len(scored) == 6 and split["held_out"] is True
    split, [(_, fit, scored)] = _plan(str(held_out), config, True, None, probe_fit="half")
    assert len(fit) == len(scored) == 3 and split["held_out"] is True
    assert split["fit"].endswith("episodes 0-2") and split["scored"].endswith("episodes 3-5")
    config = load_config(None, [f"data.train={held_out}"])  # scoring the training episodes
    split, _ = _plan(str(held_out), config, True, None, probe_fit="half")
    assert split["held_out"] is False
    with pytest.raises(ValueError, match="probe_fit"):
        _plan(str(held_out), config, True, None, probe_fit="test")


def test_synthetic_plan_scores_both_renderings_and_names_the_trained_one(tiny_model):
    from groundlam.config import load_config
    from groundlam.evaluation.evaluate import _clips, _plan, collect

    config = load_config(None, SYNTHETIC_TINY)  # trained clean: no distractors
    split, plan = _plan("synthetic", config, True, None)
    assert [variant for variant, _, _ in plan] == ["clean", "distracted"]
    assert split["trained_on"] == "clean" and split["distractors_from"] == "benchmark standard"
    assert split["distractors"] == {"camera_shake": 0.5, "background": 0.5, "sprites": 0.5,
                                    "color_jitter": 0.5, "lookalikes": 0}
    (_, _, clean), (_, _, distracted) = plan
    assert clean["actions"] == distracted["actions"]  # the same trajectories
    assert not np.array_equal(clean[0]["frames"], distracted[0]["frames"])
    # clips know where they start in their episode: the time step of the task + time probe
    clips = _clips(clean, config, tiny_model, "clean")
    collected = collect(tiny_model, clips, clean, max_clips=3)
    np.testing.assert_array_equal(collected.steps, [[0, 1, 2, 3, 4], [6, 7, 8, 9, 10],
                                                    [0, 1, 2, 3, 4]])
    config = load_config(None, [*SYNTHETIC_TINY, "data.synthetic.distractors.sprites=1.0"])
    split, plan = _plan("synthetic", config, True, None)
    assert split["trained_on"] == "distracted" and split["distractors_from"] == "run"
    assert split["distractors"]["sprites"] == 1.0 and split["distractors"]["background"] == 0.0
    assert _plan("synthetic", config, False, None)[0]["trained_on"] is None  # no run config


def test_synthetic_evaluation_generates_only_the_episodes_its_clips_read():
    """Episodes are functions of (seed, index): at most ceil(max_clips / clips an episode) of
    them are generated (2 clips of 6 frames in 12), never more than data.eval_episodes."""
    from groundlam import GroundLAM, GroundLAMConfig
    from groundlam.config import load_config
    from groundlam.evaluation.evaluate import _synthetic_episodes

    config = load_config(None, SYNTHETIC_TINY)  # 4 episodes of 12 frames, 6-frame clips
    model = GroundLAM(GroundLAMConfig(**TINY))
    assert [_synthetic_episodes(config, model, clips) for clips in (None, 1, 3, 4, 8, 100)] == [
        4, 1, 2, 2, 4, 4]


def test_probes_fit_side_by_side_give_what_they_give_one_by_one():
    from functools import partial

    from groundlam.evaluation.metrics import fit_in_parallel

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 10)), rng.integers(0, 3, 120)
    jobs = {n: partial(action_probe_scores, x[:80] * n, y[:80], x[80:] * n, y[80:])
            for n in (1, 2, 3)}
    assert fit_in_parallel(jobs) == {n: job() for n, job in jobs.items()}
    assert list(fit_in_parallel(jobs)) == [1, 2, 3]
