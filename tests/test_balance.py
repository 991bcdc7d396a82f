"""InfoNCE's balance against reconstruction on the shared encoder (groundlam.losses.balance)."""

import pytest

from groundlam.losses import InfoNCEBalance


def norms(infonce, reconstruction):
    return {"encoder_grad_infonce": infonce, "encoder_grad_reconstruction": reconstruction}


def test_scales_infonce_down_to_the_cap_and_back_up_to_its_weight():
    balance = InfoNCEBalance(max_ratio=1.0)
    assert balance.update(norms(20.0, 2.0)) == pytest.approx(0.1)  # 10x over: a tenth
    # measured with the scale applied: 4x over again -> a further quarter
    assert balance.update(norms(8.0, 2.0)) == pytest.approx(0.025)
    assert balance.update(norms(0.5, 2.0)) == pytest.approx(0.1)  # 4x under: back up
    assert balance.update(norms(0.01, 2.0)) == 1.0  # never past loss.infonce_weight


def test_off_missing_or_degenerate_norms_leave_the_scale():
    assert InfoNCEBalance(max_ratio=0.0).update(norms(100.0, 1.0)) == 1.0
    balance = InfoNCEBalance(max_ratio=2.0)
    assert balance.update({}) == 1.0  # before loss.infonce_start, or under ZeRO-3
    assert balance.update(norms(5.0, 0.0)) == 1.0  # no reconstruction gradient yet
    assert balance.update(norms(float("nan"), 1.0)) == 1.0
    balance.update(norms(1e9, 1.0))
    assert balance.scale == balance.min_scale  # one odd batch cannot switch language off


def test_state_round_trip_and_bad_ratio():
    balance = InfoNCEBalance(max_ratio=1.0)
    balance.update(norms(4.0, 1.0))
    restored = InfoNCEBalance(max_ratio=1.0)
    restored.load_state_dict(balance.state_dict())
    assert restored.scale == balance.scale == pytest.approx(0.25)
    with pytest.raises(ValueError, match="negative"):
        InfoNCEBalance(max_ratio=-1.0)
