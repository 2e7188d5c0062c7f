"""Central DP-FedAvg: epsilon from dp-accounting called directly, clipping and noise against hand-computed values,
adaptive clipping's update rule, calibration, and the simulator reporting epsilon every round."""

import dp_accounting as dp
import keras
import numpy as np
import pytest

from tfx_ext.federated import CentralDP, ClientData, DPAccountant, Payload, SecAgg, simulate
from tfx_ext.federated.aggregators import RoundContext
from tfx_ext.federated.privacy import clip_to_norm
from tests.federated.test_simulation import population, tiny_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def direct_epsilon(event, rounds, delta, relation, pld=False):
    accountant = dp.pld.PLDAccountant(relation) if pld else dp.rdp.RdpAccountant(neighboring_relation=relation)
    accountant.compose(event, rounds)
    return accountant.get_epsilon(delta)


REPLACE, ADD_REMOVE = dp.NeighboringRelation.REPLACE_ONE, dp.NeighboringRelation.ADD_OR_REMOVE_ONE


@pytest.mark.parametrize("z,count_std", [(1.1, None), (0.7, 2.5)])
def test_fixed_size_cohorts_are_accounted_as_sampling_without_replacement_under_replace_one(z, count_std):
    ours = DPAccountant(population_size=1000, cohort_size=50, noise_multiplier=z, clipped_count_stddev=count_std)
    gaussian = dp.GaussianDpEvent(z / 2)  # replace-one: the clipped sum moves by up to 2C
    inner = gaussian if count_std is None else dp.ComposedDpEvent([gaussian, dp.GaussianDpEvent(count_std)])
    want = direct_epsilon(dp.SampledWithoutReplacementDpEvent(1000, 50, inner), 30, 1e-5, REPLACE)
    assert ours.epsilon(30, 1e-5) == want
    assert ours.epsilon(0, 1e-5) == 0.0 and ours.epsilon(10, 1e-5) < ours.epsilon(30, 1e-5)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_poisson_sampling_is_accounted_under_add_or_remove_one(accountant):
    ours = DPAccountant(population_size=1000, cohort_size=50, noise_multiplier=1.0, sampling="poisson",
                        accountant=accountant)
    want = direct_epsilon(dp.PoissonSampledDpEvent(0.05, dp.GaussianDpEvent(1.0)), 20, 1e-5, ADD_REMOVE,
                          pld=accountant == "pld")
    assert ours.epsilon(20, 1e-5) == pytest.approx(want, rel=1e-12)


def test_pld_with_the_simulators_sampling_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match=r"PLD accountant does not support sampling without replacement .*"
                                         r"use `accountant='rdp'`"):
        DPAccountant(population_size=100, cohort_size=10, noise_multiplier=1.0, accountant="pld")


def test_calibration_spends_the_budget_and_no_more():
    dpp = CentralDP(clip_norm=1.0, population_size=500, cohort_size=25, target_epsilon=2.0, rounds=40,
                    target_delta=1e-5)
    eps = dpp.epsilon(40)
    assert 1.97 < eps <= 2.0 + 1e-6
    assert dpp.accountant.epsilon(40, 1e-5) == eps and dpp.noise_multiplier > 0


def test_clip_to_norm_hand_cases():
    out, norm = clip_to_norm([np.array([3.0]), np.array([4.0])], 1.0)
    assert norm == 5.0 and np.allclose(np.concatenate(out), [0.6, 0.8])
    out, norm = clip_to_norm([np.array([0.3, 0.4])], 1.0)
    assert norm == pytest.approx(0.5) and np.allclose(out[0], [0.3, 0.4])
    out, norm = clip_to_norm([np.zeros(3)], 1.0)
    assert norm == 0.0 and np.all(out[0] == 0)


def ctx(rnd=1, m=4, seed=0):
    return RoundContext(rnd, None, np.random.default_rng(seed), m)


def test_clients_clip_their_mean_update_and_count_equally():
    dpp = CentralDP(clip_norm=1.0, population_size=40, cohort_size=4, noise_multiplier=1.0)
    payload = Payload([np.array([30.0, 40.0])], weight=10.0)  # n * delta with n = 10: delta = (3, 4), norm 5
    out, metrics = dpp.on_client(payload, ctx())
    assert out.weight == 1.0 and np.allclose(out.arrays[0], [0.6, 0.8])
    assert metrics == {"clipped": 1.0, "update_norm": 5.0}
    with pytest.raises(ValueError, match=r"accounted for cohorts of 4 clients, but round 1 has 5"):
        dpp.on_client(payload, ctx(m=5))


def test_server_noise_has_the_stated_standard_deviation():
    dpp = CentralDP(clip_norm=2.0, population_size=40, cohort_size=4, noise_multiplier=0.5)
    total = Payload([np.zeros(200_000)], weight=4.0)
    out, metrics = dpp.on_server(total, ctx())
    noise = out.arrays[0]
    assert metrics["noise_stddev"] == 1.0 and abs(np.std(noise) - 1.0) < 0.01 and abs(np.mean(noise)) < 0.01
    assert out.weight == 4.0 and metrics["epsilon"] == dpp.accountant.epsilon(1, dpp.target_delta)


def test_adaptive_clipping_moves_the_norm_geometrically_towards_the_quantile():
    dpp = CentralDP(clip_norm=1.0, population_size=40, cohort_size=4, noise_multiplier=1.0,
                    adaptive_clip_quantile=0.5, clip_learning_rate=0.2, clipped_count_stddev=1e-9)
    norms = [0.5, 3.0, 4.0, 5.0]  # one of four within C = 1
    payloads = [dpp.on_client(Payload([np.array([n, 0.0])], weight=1.0), ctx())[0] for n in norms]
    assert [float(p.extras["dp_within_clip"]) for p in payloads] == [1.0, 0.0, 0.0, 0.0]
    total = Payload([sum(p.arrays[0] for p in payloads)], 4.0, {"dp_within_clip": np.asarray(1.0)})
    out, metrics = dpp.on_server(total, ctx())
    assert "dp_within_clip" not in out.extras
    assert dpp.clip_norm == pytest.approx(np.exp(-0.2 * (0.25 - 0.5)), rel=1e-6)  # grows: too many clipped
    assert metrics["within_clip_fraction"] == pytest.approx(0.25, abs=1e-6)


def test_constructor_errors_are_named():
    with pytest.raises(ValueError, match=r"exactly one of `noise_multiplier` and `target_epsilon`"):
        CentralDP(clip_norm=1.0, population_size=10, cohort_size=2)
    with pytest.raises(ValueError, match=r"`target_epsilon` needs `rounds`"):
        CentralDP(clip_norm=1.0, population_size=10, cohort_size=2, target_epsilon=1.0)
    with pytest.raises(ValueError, match=r"`clip_norm`"):
        CentralDP(clip_norm=0.0, population_size=10, cohort_size=2, noise_multiplier=1.0)
    with pytest.raises(ValueError, match=r"`cohort_size`"):
        CentralDP(clip_norm=1.0, population_size=10, cohort_size=20, noise_multiplier=1.0)


KW = dict(clients_per_round=5, batch_size=8, loss=LOSS, client_optimizer=keras.optimizers.SGD(0.1), progress=False)


@pytest.mark.parametrize("secure", [None, "secagg+"])
def test_simulate_reports_epsilon_every_round_and_composes_with_secure_aggregation(secure, tmp_path):
    cd, _ = population(n_clients=10)
    dpp = CentralDP(clip_norm=0.5, population_size=len(cd), cohort_size=5, noise_multiplier=0.8,
                    adaptive_clip_quantile=0.5)
    kw = {} if secure is None else {"secure": SecAgg(variant=secure, seed=0)}
    h, _ = simulate(tiny_model, cd, rounds=3, postprocessors=[dpp], checkpoint_dir=tmp_path, **KW, **kw)
    reference = DPAccountant(population_size=10, cohort_size=5, noise_multiplier=0.8, clipped_count_stddev=0.25)
    assert h["CentralDP/epsilon"] == [reference.epsilon(r, 1 / 10**1.1) for r in (1, 2, 3)]
    assert h["CentralDP/clip_norm"][-1] != 0.5  # adapted
    # resuming keeps the adapted clip norm and the rounds already spent
    again = CentralDP(clip_norm=0.5, population_size=len(cd), cohort_size=5, noise_multiplier=0.8,
                      adaptive_clip_quantile=0.5)
    h2, _ = simulate(tiny_model, cd, rounds=4, postprocessors=[again], checkpoint_dir=tmp_path, resume=True, **KW,
                     **kw)
    assert again.rounds_done == 4 and h2["CentralDP/epsilon"][-1] == reference.epsilon(4, 1 / 10**1.1)
    assert h2["CentralDP/clip_norm_used"][-1] == pytest.approx(h["CentralDP/clip_norm"][-1])
