import math

import pytest
import torch
import torch.nn.functional as F

from groundlam.losses import infonce_loss, label_ids, reconstruction_loss, shift_tolerant_loss


def direct_infonce(task, text, labels, scale):
    """Label-aware InfoNCE written out with loops, one term at a time."""
    distinct = sorted(set(labels), key=labels.index)
    label_text = {label: text[labels.index(label)] for label in distinct}
    clip_terms = []
    for i, label in enumerate(labels):
        logits = [scale * float(task[i] @ label_text[other]) for other in distinct]
        clip_terms.append(-(logits[distinct.index(label)] - math.log(sum(map(math.exp, logits)))))
    text_terms = []
    for label in distinct:
        logits = [scale * float(task[j] @ label_text[label]) for j in range(len(labels))]
        pairs = zip(logits, labels, strict=True)
        positive = sum(math.exp(v) for v, other in pairs if other == label)
        text_terms.append(-(math.log(positive) - math.log(sum(map(math.exp, logits)))))
    return (sum(clip_terms) / len(clip_terms) + sum(text_terms) / len(text_terms)) / 2


def test_infonce_matches_direct_computation():
    torch.manual_seed(0)
    labels = ["open the drawer", "push the red block", "open the drawer", "wipe the table",
              "push the red block", "open the drawer"]
    task = F.normalize(torch.randn(6, 16, dtype=torch.float64), dim=-1)
    by_label = {label: F.normalize(torch.randn(16, dtype=torch.float64), dim=0) for label in labels}
    text = torch.stack([by_label[label] for label in labels])
    logit_scale = torch.tensor([math.log(5.0)], dtype=torch.float64)
    loss = infonce_loss(task, text, label_ids(labels), logit_scale, gather=False)
    assert loss.item() == pytest.approx(direct_infonce(task, text, labels, 5.0), rel=1e-9)


def test_same_label_clips_are_never_negatives():
    """Two clips of one label, both on their label's text: loss is as low as with one clip."""
    text = torch.eye(3)
    ids = label_ids(["a", "a", "b"])
    task = torch.stack([text[0], text[0], text[2]])
    with_duplicate = infonce_loss(task, torch.stack([text[0], text[0], text[2]]), ids,
                                  torch.tensor([math.log(50.0)]), gather=False)
    assert with_duplicate.item() < 1e-6
    # a plain CLIP loss makes each of the two "a" clips the other's negative: log(2) apiece
    plain = F.cross_entropy(50.0 * task @ task.T, torch.arange(3))
    assert plain.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-3)


def test_infonce_gradient_reaches_temperature_and_tasks():
    task = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    scale = torch.tensor([2.0], requires_grad=True)
    loss = infonce_loss(task, F.normalize(torch.randn(4, 8), dim=-1),
                        label_ids(["a", "b", "c", "a"]), scale, gather=False)
    loss.backward()
    assert task.grad.abs().sum() > 0 and scale.grad.abs() > 0


def test_label_ids_are_stable():
    assert label_ids(["open the drawer"]).item() == label_ids(["open the drawer"]).item()
    assert label_ids(["a"]).item() != label_ids(["b"]).item()
    # a fixed value: Python's salted hash() would change between processes
    assert label_ids(["a"]).item() == int.from_bytes(
        __import__("hashlib").blake2b(b"a", digest_size=8).digest(), "little", signed=True)


def test_shift_tolerant_forgives_small_shifts_only():
    torch.manual_seed(0)
    target = torch.zeros(2, 3, 3, 16, 16)
    target[..., 5:11, 5:11] = torch.rand(2, 3, 3, 6, 6)  # content away from the borders
    near = torch.roll(target, shifts=(1, -2), dims=(-2, -1))
    far = torch.roll(target, shifts=(0, 4), dims=(-2, -1))
    assert shift_tolerant_loss(near, target, tolerance=2).item() < 1e-12
    assert reconstruction_loss(near, target, "pixels").item() > 1e-3
    assert shift_tolerant_loss(far, target, tolerance=2).item() > 1e-3


def test_reconstruction_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(torch.zeros(1, 2, 3, 8, 8), torch.zeros(1, 3, 3, 8, 8))


def test_encoder_gradient_norms_measure_each_weighted_term():
    """The per-term gradient norm on the shared encoder: linear in the term's weight, and zero
    for reconstruction while the residual head is still zero (no signal reaches the encoder)."""
    from groundlam import GroundLAM, GroundLAMConfig
    from groundlam.config import load_config
    from groundlam.losses import compute_losses, encoder_gradient_norms

    from .conftest import TINY

    torch.manual_seed(0)
    model = GroundLAM(GroundLAMConfig(**TINY))
    frames = torch.rand(4, 4, 3, 32, 32) * 2 - 1  # (B, T, C, H, W)
    text = F.normalize(torch.randn(4, model.config.text_dim), dim=-1)
    ids = label_ids(["a", "b", "c", "d"])

    def norms(weight):
        config = load_config(None, [f"loss.infonce_weight={weight}"])
        losses = compute_losses(model, model(frames), frames, text, ids, config)
        return encoder_gradient_norms(losses, config, model.encoder)

    at_init = norms(0.1)
    assert at_init["encoder_grad_reconstruction"] == 0.0  # the zero-initialised residual head
    assert at_init["encoder_grad_infonce"] > 0
    assert norms(0.2)["encoder_grad_infonce"] == pytest.approx(
        2 * at_init["encoder_grad_infonce"], rel=1e-5)
    assert "encoder_grad_infonce" not in norms(0.0)
    torch.nn.init.normal_(model.decoder.head.weight, std=0.02)
    assert norms(0.1)["encoder_grad_reconstruction"] > 0


def test_infonce_joins_at_its_start_step_and_the_total_is_the_weighted_sum():
    from groundlam import GroundLAM, GroundLAMConfig
    from groundlam.config import ConfigError, load_config
    from groundlam.losses import compute_losses

    from .conftest import TINY

    torch.manual_seed(0)
    model = GroundLAM(GroundLAMConfig(**TINY))
    frames = torch.rand(4, 4, 3, 32, 32) * 2 - 1  # (B, T, C, H, W)
    text = F.normalize(torch.randn(4, model.config.text_dim), dim=-1)
    ids = label_ids(["a", "b", "c", "d"])
    config = load_config(None, ["loss.infonce_weight=0.5", "loss.infonce_start=10",
                                "loss.reconstruction_weight=2"])
    output = model(frames)
    early = compute_losses(model, output, frames, text, ids, config, step=9)
    assert "infonce" not in early
    torch.testing.assert_close(early["loss"], 2 * early["reconstruction"])
    for step in (10, None):  # from the start step on, and when no step is given
        late = compute_losses(model, output, frames, text, ids, config, step=step)
        torch.testing.assert_close(late["loss"],
                                   2 * late["reconstruction"] + 0.5 * late["infonce"])
    with pytest.raises(ConfigError, match="infonce_start"):
        load_config(None, ["loss.infonce_start=-1"])


def test_static_negatives_join_the_text_side_only():
    torch.manual_seed(1)
    labels = ["open the drawer", "push the red block", "open the drawer", "wipe the table"]
    task = F.normalize(torch.randn(4, 16, dtype=torch.float64), dim=-1)
    by_label = {label: F.normalize(torch.randn(16, dtype=torch.float64), dim=0) for label in labels}
    text = torch.stack([by_label[label] for label in labels])
    negatives = F.normalize(torch.randn(3, 16, dtype=torch.float64), dim=-1)
    scale = 5.0
    loss = infonce_loss(task, text, label_ids(labels), torch.tensor([math.log(scale)],
                        dtype=torch.float64), gather=False, negatives=negatives)
    # written out: the text -> clip softmax of each label runs over the clips and the negatives
    distinct = sorted(set(labels), key=labels.index)
    clip_side = direct_infonce(task, text, labels, scale) * 2
    text_terms = []
    for label in distinct:
        row = [scale * float(task[j] @ by_label[label]) for j in range(4)]
        extra = [scale * float(n @ by_label[label]) for n in negatives]
        positive = sum(math.exp(v) for v, other in zip(row, labels, strict=True) if other == label)
        text_terms.append(-(math.log(positive) - math.log(sum(map(math.exp, row + extra)))))
    plain_text_side = []
    for label in distinct:
        row = [scale * float(task[j] @ by_label[label]) for j in range(4)]
        positive = sum(math.exp(v) for v, other in zip(row, labels, strict=True) if other == label)
        plain_text_side.append(-(math.log(positive) - math.log(sum(map(math.exp, row)))))
    clip_side -= sum(plain_text_side) / len(plain_text_side)  # leaves the clip -> text mean
    expected = (clip_side + sum(text_terms) / len(text_terms)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_a_clip_that_embeds_like_its_still_frame_pays_log_two():
    """Each clip on its label's text and its still twin exactly where it is: the text side can
    do no better than a coin toss between them."""
    text = torch.eye(3)
    ids = label_ids(["a", "b", "c"])
    scale = torch.tensor([math.log(100.0)])
    alone = infonce_loss(text, text, ids, scale, gather=False)
    twins = infonce_loss(text, text, ids, scale, gather=False, negatives=text.clone())
    assert alone.item() < 1e-6
    assert twins.item() == pytest.approx(math.log(2) / 2, abs=1e-3)


def test_static_negatives_train_the_encoder_and_leave_the_bottleneck_statistics():
    from groundlam import GroundLAM, GroundLAMConfig
    from groundlam.config import load_config
    from groundlam.losses import compute_losses

    from .conftest import TINY

    torch.manual_seed(0)
    model = GroundLAM(GroundLAMConfig(**{**TINY, "bottleneck": "vq", "quantizer_norm": True}))
    model.train()
    frames = torch.rand(4, 4, 3, 32, 32) * 2 - 1
    text = F.normalize(torch.randn(4, model.config.text_dim), dim=-1)
    ids = label_ids(["a", "b", "c", "d"])
    output = model(frames)
    state = {k: v.clone() for k, v in model.bottleneck.state_dict().items()}
    plain = compute_losses(model, output, frames, text, ids, load_config(None, []))
    still = compute_losses(model, output, frames, text, ids,
                           load_config(None, ["loss.static_negatives=true"]))
    assert still["infonce"].item() > plain["infonce"].item()  # more negatives, a harder softmax
    for key, value in model.bottleneck.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    assert model.bottleneck.training
    # the still clips' own pass reaches the encoder
    static = model.task_embedding(frames[:, :1].expand_as(frames))
    grads = torch.autograd.grad(static.sum(), [p for p in model.encoder.parameters()],
                                allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
