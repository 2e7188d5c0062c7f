"""Matching math on plain arrays: PFNM recovers known permutations, respects the growth cap, errors are named."""

import numpy as np
import pytest

from tfx_ext.federated.fedma import match_to_global, match_units


def _permuted_copies(rng, atoms, num_clients, noise):
    feats, perms = [], []
    for _ in range(num_clients):
        p = rng.permutation(len(atoms))
        local = np.empty_like(atoms)
        local[p] = atoms  # global unit i sits at local position p[i]
        feats.append(local + noise * rng.normal(size=atoms.shape))
        perms.append(p)
    return feats, perms


@pytest.mark.parametrize("passes", [1, 3])
def test_match_units_recovers_permutations(passes):
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(12, 7))
    feats, perms = _permuted_copies(rng, atoms, 5, 0.01)
    res = match_units(feats, sigma=0.1, sigma0=1.0, gamma=1.0, passes=passes, max_units=12, rng=1)
    assert res.width == 12
    np.testing.assert_array_equal(res.counts, np.full(12, 5))
    # All clients' local units that came from the same true atom land on the same global unit.
    for i in range(12):
        targets = {int(res.assignments[j][perms[j][i]]) for j in range(5)}
        assert len(targets) == 1
    # Global atoms are the (slightly shrunk) means of the matched atoms.
    for j in range(5):
        np.testing.assert_allclose(res.atoms[res.assignments[j]], feats[j], atol=0.05)


def test_match_units_grows_new_atoms_and_cap_bounds_growth():
    rng = np.random.default_rng(1)
    shared = rng.normal(size=(4, 6)) * 3
    feats = [np.vstack([shared + 0.01 * rng.normal(size=shared.shape), 3 * rng.normal(size=(2, 6))])
             for _ in range(3)]
    free = match_units(feats, sigma=0.1, sigma0=3.0, gamma=1.0, passes=2, rng=0)
    assert free.width == 4 + 2 * 3  # the private units of each client stay apart
    capped = match_units(feats, sigma=0.1, sigma0=3.0, gamma=1.0, passes=2, max_units=7, rng=0)
    assert capped.width == 7
    none = match_units(feats, sigma=0.1, sigma0=3.0, gamma=1.0, passes=2, max_units=6, rng=0)
    assert none.width == 6  # the widest client always fits
    for res in (free, capped, none):
        for a in res.assignments:
            assert len(set(a.tolist())) == len(a) and a.max() < res.width


def test_match_units_is_seeded():
    rng = np.random.default_rng(2)
    feats = [rng.normal(size=(5, 3)) for _ in range(4)]
    a = match_units(feats, passes=3, rng=7)
    b = match_units(feats, passes=3, rng=7)
    for x, y in zip(a.assignments, b.assignments):
        np.testing.assert_array_equal(x, y)


def test_match_to_global_inverts_a_permutation():
    rng = np.random.default_rng(3)
    glob = rng.normal(size=(9, 4))
    p = rng.permutation(9)
    local = np.empty_like(glob)
    local[p] = glob
    a = match_to_global(local + 1e-3, glob)
    np.testing.assert_array_equal(a[p], np.arange(9))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"features": []}, "`features` must be a non-empty list"),
        ({"features": [np.zeros((2, 3)), np.zeros((2, 4))]}, "same number of features"),
        ({"features": [np.zeros((0, 3))]}, "at least one unit"),
        ({"features": [np.zeros((2, 3))], "sigma": 0}, "`sigma` must be a finite number > 0"),
        ({"features": [np.zeros((2, 3))], "passes": 0}, "`passes` must be an integer >= 1"),
        ({"features": [np.zeros((2, 3))], "max_units": 0}, "`max_units` must be None or a positive integer"),
        ({"features": [np.zeros((2, 3))], "prior_mean": np.zeros(2)}, "`prior_mean` must have shape"),
    ],
)
def test_match_units_errors(kwargs, match):
    features = kwargs.pop("features")
    with pytest.raises(ValueError, match=match):
        match_units(features, **kwargs)


def test_match_to_global_error():
    with pytest.raises(ValueError, match="U <= L"):
        match_to_global(np.zeros((3, 2)), np.zeros((2, 2)))
