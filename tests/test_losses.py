"""ScanGen loss: hand-computed cases, invariances, gradients, empty batches and input validation."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from scangen.losses import (
    cosine_distance_matrix,
    scangen_loss,
    scangen_loss_terms,
    scangen_pair_counts,
)


def reference_loss(z: np.ndarray, s: list[int], c: list[int], alpha: float, m: float) -> float:
    """Pair-by-pair loop straight from the method spec (independent of the vectorised code)."""
    att = rep = 0.0
    n_pairs = 0
    for i, j in itertools.combinations(range(len(s)), 2):
        cos = float(z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j])))
        d = 1.0 - cos
        if s[i] == s[j] and c[i] != c[j]:
            att += d**2
            n_pairs += 1
        elif c[i] == c[j] and s[i] != s[j]:
            rep += max(0.0, m - d) ** 2
            n_pairs += 1
    return 0.0 if n_pairs == 0 else (alpha * att + (1 - alpha) * rep) / n_pairs


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_only_attraction_pairs_hand_computed():
    # same specimen, two scanners, orthogonal vectors: d = 1, |P| = 1, |N| = 0 -> L = alpha * 1 / 1
    z = t([[1.0, 0.0], [0.0, 2.0]])
    loss, counts = scangen_loss(z, t([5, 5], torch.long), t([0, 1], torch.long), 0.3, 0.5, return_counts=True)
    assert counts == (1, 0)
    assert loss.item() == pytest.approx(0.3, abs=1e-12)
    # 60 degrees apart: d = 0.5 -> alpha * 0.25
    z = t([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    assert scangen_loss(z, t([1, 1], torch.long), t([0, 1], torch.long), 0.8, 0.5).item() == pytest.approx(
        0.8 * 0.25, abs=1e-12
    )


def test_only_repulsion_pairs_hand_computed():
    # same scanner, two specimens, identical directions: d = 0 -> (1 - alpha) * m^2
    z = t([[1.0, 1.0], [2.0, 2.0]])
    loss, counts = scangen_loss(z, t([0, 1], torch.long), t([3, 3], torch.long), 0.25, 0.6, return_counts=True)
    assert counts == (0, 1)
    assert loss.item() == pytest.approx(0.75 * 0.36, abs=1e-12)
    # opposite vectors: d = 2 > m -> hinge is 0
    z = t([[1.0, 0.0], [-1.0, 0.0]])
    assert scangen_loss(z, t([0, 1], torch.long), t([3, 3], torch.long), 0.25, 0.6).item() == pytest.approx(0.0)


def test_both_pair_kinds_hand_computed():
    # specimens [0, 0, 1, 1], scanners [0, 1, 0, 1]: P = {(0,1), (2,3)}, N = {(0,2), (1,3)}
    z = t([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    s, c = t([0, 0, 1, 1], torch.long), t([0, 1, 0, 1], torch.long)
    # d01 = 1, d23 = 2 -> L_att = 1 + 4 = 5; d02 = 0, d13 = 1 -> L_rep = m^2 + max(0, m-1)^2 = 0.49 (m=0.7)
    alpha, m = 0.4, 0.7
    expected = (alpha * 5.0 + (1 - alpha) * 0.49) / 4
    terms = scangen_loss_terms(z, s, c, alpha, m)
    assert (terms.n_attraction, terms.n_repulsion) == (2, 2)
    assert terms.attraction.item() == pytest.approx(5.0)
    assert terms.repulsion.item() == pytest.approx(0.49)
    assert terms.loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pairwise_loop_reference(seed):
    rng = np.random.default_rng(seed)
    n = 12
    z = rng.normal(size=(n, 5))
    s = rng.integers(0, 4, size=n).tolist()
    c = rng.integers(0, 3, size=n).tolist()
    got = scangen_loss(torch.from_numpy(z), torch.tensor(s), torch.tensor(c), 0.6, 0.9)
    assert got.item() == pytest.approx(reference_loss(z, s, c, 0.6, 0.9), rel=1e-10, abs=1e-12)


def test_no_valid_pair_returns_attached_zero_without_warning():
    z = torch.randn(3, 4, requires_grad=True)
    cases = [
        (torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])),  # duplicates: same specimen and scanner
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])),  # all different specimens and scanners
    ]
    for s, c in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss, counts = scangen_loss(z, s, c, 0.5, 0.5, return_counts=True)
        assert counts == (0, 0)
        assert loss.item() == 0.0 and loss.ndim == 0
        assert loss.requires_grad
        loss.backward()
        assert torch.equal(z.grad, torch.zeros_like(z))
        z.grad = None
    single = scangen_loss(torch.randn(1, 4, requires_grad=True), torch.tensor([0]), torch.tensor([0]), 0.5, 0.5)
    assert single.item() == 0.0 and single.requires_grad


def test_pair_counts_helper_matches_loss_counts():
    s = torch.tensor([0, 0, 0, 1, 1, 2])
    c = torch.tensor([0, 1, 2, 0, 1, 0])
    # P: specimen 0 -> 3 pairs, specimen 1 -> 1 pair; N: scanner 0 -> 3 pairs, scanner 1 -> 1 pair
    assert scangen_pair_counts(s, c) == (4, 4)
    _, counts = scangen_loss(torch.randn(6, 3), s, c, 0.5, 1.0, return_counts=True)
    assert counts == (4, 4)


def test_invariant_to_batch_permutation_and_scale():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(10, 6, generator=g, dtype=torch.float64)
    s = torch.randint(0, 3, (10,), generator=g)
    c = torch.randint(0, 3, (10,), generator=g)
    base = scangen_loss(z, s, c, 0.3, 0.8)
    perm = torch.randperm(10, generator=g)
    assert scangen_loss(z[perm], s[perm], c[perm], 0.3, 0.8).item() == pytest.approx(base.item(), rel=1e-12)
    assert scangen_loss(z * 7.5, s, c, 0.3, 0.8).item() == pytest.approx(base.item(), rel=1e-9)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0, 0, 1, 1, 2])
    c = torch.tensor([0, 1, 0, 1, 0])
    # margin 1.5 keeps every repulsion pair away from the hinge's kink
    assert torch.autograd.gradcheck(lambda x: scangen_loss(x, s, c, 0.35, 1.5), (z,))


def test_zero_vector_gives_finite_gradient():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    loss = scangen_loss(z, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 0.5, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert cosine_distance_matrix(z.detach())[0, 1].item() == pytest.approx(1.0)


def test_alpha_extremes_select_one_term():
    z = torch.randn(6, 4, dtype=torch.float64)
    s, c = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 0, 1])
    terms = scangen_loss_terms(z, s, c, 1.0, 0.5)
    assert terms.loss.item() == pytest.approx(terms.attraction.item() / 9)
    terms = scangen_loss_terms(z, s, c, 0.0, 0.5)
    assert terms.loss.item() == pytest.approx(terms.repulsion.item() / 9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"margin": 0.0}, "margin"),
        ({"margin": float("inf")}, "margin"),
        ({"specimen": torch.tensor([0, 1])}, "specimen"),
        ({"scanner": torch.tensor([0.0, 1.0, 2.0])}, "scanner"),
        ({"z": torch.randn(3)}, "z"),
        ({"z": torch.ones(3, 2, dtype=torch.long)}, "z"),
    ],
)
def test_invalid_inputs_raise_clear_errors(kwargs, match):
    args = {
        "z": torch.randn(3, 2),
        "specimen": torch.tensor([0, 0, 1]),
        "scanner": torch.tensor([0, 1, 0]),
        "alpha": 0.5,
        "margin": 0.5,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        scangen_loss(**args)


def test_norm_aware_distance_hand_computed_and_equal_to_cosine_at_equal_norms():
    from scangen.losses import distance_matrix

    # same direction, norms 1 and 2: |z1 - z2|^2 / (|z1|^2 + |z2|^2) = 1 / 5; cosine sees nothing
    z = t([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    d = distance_matrix(z, "cosine_norm")
    assert d[0, 1].item() == pytest.approx(0.2, abs=1e-12)
    assert distance_matrix(z, "cosine")[0, 1].item() == pytest.approx(0.0, abs=1e-12)
    assert d[2, 3].item() == pytest.approx(2.0, abs=1e-12)  # opposite, equal norms: the maximum
    assert d[0, 2].item() == pytest.approx(1.0, abs=1e-12)  # orthogonal: 1 whatever the norms
    g = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1) * 3.0
    assert torch.allclose(distance_matrix(unit, "cosine_norm"), distance_matrix(unit, "cosine"), atol=1e-12)
    w = torch.randn(8, 5, generator=g, dtype=torch.float64)
    dw = distance_matrix(w, "cosine_norm")
    assert bool((dw >= -1e-12).all() and (dw <= 2 + 1e-12).all())
    assert torch.allclose(distance_matrix(w * 4.0, "cosine_norm"), dw, atol=1e-12)  # common rescaling
    with pytest.raises(ValueError, match="distance"):
        distance_matrix(w, "euclid")


def test_cosine_norm_loss_hand_computed():
    z = t([[1.0, 0.0], [2.0, 0.0]])
    loss = scangen_loss(z, t([0, 0], torch.long), t([0, 1], torch.long), 0.5, 0.5, distance="cosine_norm")
    assert loss.item() == pytest.approx(0.5 * 0.2**2, abs=1e-12)
    # a repulsion pair with the same direction but norm ratio 3: d = 4 / 10, hinge (0.75 - 0.4)^2
    z = t([[1.0, 1.0], [3.0, 3.0]])
    loss = scangen_loss(z, t([0, 1], torch.long), t([2, 2], torch.long), 0.5, 0.75, distance="cosine_norm")
    assert loss.item() == pytest.approx(0.5 * 0.35**2, abs=1e-12)


def test_pair_norm_hand_computed_with_unequal_pair_counts():
    # specimens [0, 0, 0, 1], scanners [0, 1, 2, 0]: P = {(0,1), (0,2), (1,2)}, N = {(0,3)}
    z = t([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    s, c = t([0, 0, 0, 1], torch.long), t([0, 1, 2, 0], torch.long)
    # d01 = 1, d02 = 0, d12 = 1 -> L_att = 2; d03 = 0 -> L_rep = m^2 = 0.25
    alpha, m = 0.3, 0.5
    spec_form, parts = scangen_loss(z, s, c, alpha, m, return_terms=True)
    assert spec_form.item() == pytest.approx((alpha * 2 + (1 - alpha) * 0.25) / 4, abs=1e-12)
    assert parts["n_att"] == 3 and parts["n_rep"] == 1
    assert parts["attraction"].item() == pytest.approx(alpha * 2 / 4, abs=1e-12)
    assert parts["repulsion"].item() == pytest.approx((1 - alpha) * 0.25 / 4, abs=1e-12)
    normed, counts, parts = scangen_loss(z, s, c, alpha, m, pair_norm=True, return_counts=True, return_terms=True)
    assert counts == (3, 1)
    assert normed.item() == pytest.approx(alpha * 2 / 3 + (1 - alpha) * 0.25 / 1, abs=1e-12)
    assert (parts["attraction"] + parts["repulsion"]).item() == pytest.approx(normed.item(), abs=1e-12)
    # one kind missing: its term is 0, the other is averaged over its own pairs
    only_att = scangen_loss(z[:3], s[:3], c[:3], alpha, m, pair_norm=True)
    assert only_att.item() == pytest.approx(alpha * 2 / 3, abs=1e-12)


def test_cosine_norm_gradcheck_and_zero_vector():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s, c = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 0, 1, 0])
    assert torch.autograd.gradcheck(
        lambda x: scangen_loss(x, s, c, 0.35, 2.0, distance="cosine_norm", pair_norm=True), (z,)
    )
    z0 = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    loss = scangen_loss(z0, torch.tensor([0, 0]), torch.tensor([0, 1]), 0.5, 0.5, distance="cosine_norm")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z0.grad).all()
