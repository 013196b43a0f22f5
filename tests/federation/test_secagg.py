"""Secure aggregation: exactness, dropouts, what the coordinator sees, refusals."""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from projects.federation import secagg, signing
from projects.federation.secagg import SecAggConfig, SecAggFailure

# p-values are random; 1e-4 keeps a false alarm negligible while a biased mask fails by far.
P_MIN = 1e-4


def sites(n: int) -> list[str]:
    return [f"site-{i:02d}" for i in range(n)]


@pytest.fixture(scope="module")
def keys() -> dict[str, object]:
    return {site: signing.generate() for site in sites(10)}


def config_for(n: int, dim: int = 64, **kwargs: object) -> SecAggConfig:
    values = {"clip": 4.0, "max_weight": 10_000.0} | kwargs
    return SecAggConfig(
        run="run-1", round_number=1, nonce="ab" * 16, cohort=tuple(sites(n)), dim=dim, **values
    )


def encoded_inputs(config: SecAggConfig, seed: int = 0) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    deltas, counts, vectors = {}, {}, {}
    for site in config.cohort:
        deltas[site] = rng.normal(0, 1, config.dim).clip(-config.clip, config.clip)
        counts[site] = int(rng.integers(50, 2_000))
        vectors[site] = secagg.encode_update([deltas[site]], counts[site], config, rng).vector
    return deltas, counts, vectors


def ring_sum(vectors: list[np.ndarray]) -> np.ndarray:
    total = np.zeros_like(vectors[0])
    with np.errstate(over="ignore"):
        for v in vectors:
            total = total + v
    return total


def test_threshold_is_a_strict_majority_and_at_least_two() -> None:
    assert [secagg.threshold(n) for n in (2, 3, 4, 5, 10, 11, 100)] == [2, 2, 3, 3, 6, 6, 51]


@pytest.mark.parametrize("n", [3, 10])
def test_unmasked_sum_equals_plain_sum_exactly_in_the_ring(keys, n) -> None:
    config = config_for(n)
    _, _, vectors = encoded_inputs(config)
    result = secagg.round_in_process(config, vectors, keys)
    assert np.array_equal(result.total, ring_sum(list(vectors.values())))
    assert result.survivors == config.cohort and result.dropped == ()


def test_decoded_mean_is_the_weighted_mean_within_the_quantisation_bound(keys) -> None:
    config = config_for(10, dim=500)
    deltas, counts, vectors = encoded_inputs(config, seed=3)
    result = secagg.round_in_process(config, vectors, keys)
    (mean,), samples = secagg.decode_sum(result.total, config, [(config.dim,)])
    assert samples == sum(counts.values())
    exact = sum(counts[s] * deltas[s] for s in deltas) / samples
    bound = secagg.quantisation_bound(config, 10, samples)
    assert np.max(np.abs(mean - exact)) <= bound
    assert bound < 1e-9


def test_saturated_coordinates_are_clipped_and_counted() -> None:
    config = config_for(3, dim=4, clip=1.0)
    encoded = secagg.encode_update(
        [np.array([0.5, 2.0, -3.0, 0.0])], 100, config, np.random.default_rng(0)
    )
    assert encoded.saturated == 2
    decoded, samples = secagg.decode_sum(encoded.vector, config, [(4,)])
    assert samples == 100
    assert np.allclose(decoded[0], [0.5, 1.0, -1.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("kind", ["input", "zeros"])
def test_masked_vectors_look_uniform_and_uncorrelated_with_the_inputs(keys, kind) -> None:
    config = config_for(3, dim=20_000)
    rng = np.random.default_rng(7)
    vectors = {}
    for site in config.cohort:
        delta = rng.normal(0, 1, config.dim) if kind == "input" else np.zeros(config.dim)
        vectors[site] = secagg.encode_update([delta], 500, config, rng).vector
    observed: dict = {}
    secagg.round_in_process(config, vectors, keys, observed=observed)
    site = config.cohort[1]
    y = observed["masked"][site]
    top = (y >> np.uint64(56)).astype(np.int64)
    assert stats.chisquare(np.bincount(top, minlength=256)).pvalue > P_MIN
    assert stats.kstest(y.astype(np.float64) / 2.0**64, "uniform").pvalue > P_MIN
    if kind == "input":
        x = vectors[site].view(np.int64).astype(np.float64)
        assert abs(np.corrcoef(x, y.astype(np.float64))[0, 1]) < 0.05


def test_a_squeezed_seed_would_fail_the_uniformity_oracle() -> None:
    """The oracle has teeth: an input with no mask (top byte near 0 or 255) is far from uniform."""
    config = config_for(3, dim=20_000)
    x = secagg.encode_update(
        [np.random.default_rng(1).normal(0, 1, config.dim)], 500, config, np.random.default_rng(2)
    ).vector
    top = (x >> np.uint64(56)).astype(np.int64)
    assert stats.chisquare(np.bincount(top, minlength=256)).pvalue < P_MIN


def test_pair_masks_use_the_full_seed() -> None:
    """Seeds differing in one bit anywhere give unrelated masks (no folding to 32 bits)."""
    seed = bytes(range(32))
    flipped = bytes(range(31)) + bytes([31 ^ 0x80])
    assert not np.array_equal(secagg.prg(seed, 16), secagg.prg(flipped, 16))
    high = bytes([0x80]) + bytes(range(1, 32))
    assert not np.array_equal(secagg.prg(seed, 16), secagg.prg(high, 16))


@pytest.mark.parametrize("n", [3, 10])
def test_recovers_with_n_minus_t_dropouts(keys, n) -> None:
    config = config_for(n)
    _, _, vectors = encoded_inputs(config)
    allowed = n - config.threshold
    early = list(config.cohort[:allowed])  # they shared their keys, never sent an input
    result = secagg.round_in_process(config, vectors, keys, drop_after_share_keys=early)
    alive = [s for s in config.cohort if s not in early]
    assert np.array_equal(result.total, ring_sum([vectors[s] for s in alive]))
    assert result.dropped == tuple(early)


def test_recovers_when_sites_vanish_at_different_stages(keys) -> None:
    """n = 10, t = 6: three drop after sharing, one more after sending its input."""
    config = config_for(10)
    _, _, vectors = encoded_inputs(config)
    early, late = list(config.cohort[2:5]), [config.cohort[7]]
    result = secagg.round_in_process(
        config, vectors, keys, drop_after_share_keys=early, drop_after_masked=late
    )
    alive = [s for s in config.cohort if s not in early]
    assert np.array_equal(result.total, ring_sum([vectors[s] for s in alive]))


def test_fails_with_fewer_than_t_survivors(keys) -> None:
    config = config_for(10)
    _, _, vectors = encoded_inputs(config)
    early = list(config.cohort[: 10 - config.threshold + 1])
    with pytest.raises(SecAggFailure) as caught:
        secagg.round_in_process(config, vectors, keys, drop_after_share_keys=early)
    assert caught.value.code == "too_few_sites"
    assert caught.value.detail["sites"] == config.threshold - 1


def test_fails_when_fewer_than_t_answer_the_unmasking(keys) -> None:
    config = config_for(10)
    _, _, vectors = encoded_inputs(config)
    late = list(config.cohort[: 10 - config.threshold + 1])
    with pytest.raises(SecAggFailure) as caught:
        secagg.round_in_process(config, vectors, keys, drop_after_masked=late)
    assert caught.value.code == "too_few_sites"
    assert caught.value.detail["stage"] == "unmask"


def test_shamir_any_t_shares_rebuild_and_t_minus_one_do_not() -> None:
    secret = bytes(range(32))
    shares = secagg.shamir_split(secret, 10, 6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        chosen = [shares[i] for i in rng.choice(10, size=6, replace=False)]
        assert secagg.shamir_combine(chosen, 6) == secret
    with pytest.raises(SecAggFailure):
        secagg.shamir_combine(shares[:5], 6)
    # t - 1 shares plus a forged one give a value outside the secrets' range: refused
    forged = [*shares[:5], (shares[5][0], (shares[5][1] + 2**300) % secagg.PRIME)]
    with pytest.raises(SecAggFailure):
        secagg.shamir_combine(forged, 6)


def _staged(config: SecAggConfig, keys: dict) -> tuple[dict, dict, dict]:
    public = {s: keys[s].public_key() for s in config.cohort}
    state = {s: secagg.SiteSecrets.fresh(s) for s in config.cohort}
    ads = {s: secagg.advertise(state[s], config, keys[s]) for s in config.cohort}
    return public, state, ads


def test_a_tampered_advertisement_is_refused(keys) -> None:
    config = config_for(3)
    public, state, ads = _staged(config, keys)
    victim = config.cohort[2]
    forged_key = secagg.SiteSecrets.fresh(victim)
    swapped = secagg.advertise(forged_key, config, signing.generate())  # not victim's key
    ads_bad = ads | {victim: dataclasses.replace(ads[victim], s_pk=swapped.s_pk)}
    with pytest.raises(SecAggFailure) as caught:
        secagg.share_keys(state[config.cohort[0]], config, ads_bad, public)
    assert caught.value.code == "bad_advertisement"
    assert caught.value.detail == {"site": victim, "problem": "signature"}
    ads_foreign = ads | {victim: swapped}  # well formed, signed by someone else
    with pytest.raises(SecAggFailure):
        secagg.share_keys(state[config.cohort[0]], config, ads_foreign, public)
    # and the genuine ones pass
    assert set(secagg.share_keys(state[config.cohort[0]], config, ads, public)) == set(
        config.cohort[1:]
    )


def test_an_advertisement_from_another_round_is_refused(keys) -> None:
    config = config_for(3)
    public, state, ads = _staged(config, keys)
    later = dataclasses.replace(config, round_number=2)
    with pytest.raises(SecAggFailure) as caught:
        secagg.share_keys(state[config.cohort[0]], later, ads, public)
    assert caught.value.code == "bad_advertisement"


def test_a_site_refuses_when_its_own_keys_come_back_changed(keys) -> None:
    config = config_for(3)
    public, state, ads = _staged(config, keys)
    me = config.cohort[0]
    other = secagg.advertise(secagg.SiteSecrets.fresh(me), config, keys[me])  # validly signed
    with pytest.raises(SecAggFailure) as caught:
        secagg.share_keys(state[me], config, ads | {me: other}, public)
    assert caught.value.detail["problem"] == "own keys changed"


def test_a_corrupted_share_is_refused(keys) -> None:
    config = config_for(3)
    public, state, ads = _staged(config, keys)
    out = {s: secagg.share_keys(state[s], config, ads, public) for s in config.cohort}
    a, b = config.cohort[0], config.cohort[1]
    raw = bytearray(secagg._unb64(out[b][a]))
    raw[-1] ^= 1
    inbox = {s: out[s][a] for s in config.cohort if s != a} | {b: secagg._b64(bytes(raw))}
    vector = np.zeros(config.dim + 1, dtype=secagg.RING_DTYPE)
    with pytest.raises(SecAggFailure) as caught:
        secagg.masked_input(state[a], config, ads, list(config.cohort), inbox, vector)
    assert caught.value.code == "bad_share"


def test_a_site_never_reveals_both_shares_of_one_peer(keys) -> None:
    config = config_for(3)
    public, state, ads = _staged(config, keys)
    out = {s: secagg.share_keys(state[s], config, ads, public) for s in config.cohort}
    a = config.cohort[0]
    inbox = {s: out[s][a] for s in config.cohort if s != a}
    vector = np.zeros(config.dim + 1, dtype=secagg.RING_DTYPE)
    secagg.masked_input(state[a], config, ads, list(config.cohort), inbox, vector)
    everyone = list(config.cohort)
    first = secagg.unmask(state[a], config, everyone, [])
    assert set(first["b"]) == set(everyone) and first["sk"] == {}
    # a retry with the same sets gives the same answer
    assert secagg.unmask(state[a], config, everyone, []) == first
    # a coordinator now claiming c dropped asks for c's key share as well: refused
    with pytest.raises(SecAggFailure) as caught:
        secagg.unmask(state[a], config, everyone[:2], everyone[2:])
    assert caught.value.code == "both_shares"


def test_site_secrets_survive_a_round_trip_through_json(keys) -> None:
    config = config_for(3)
    public, state, ads = _staged(config, keys)
    a = config.cohort[0]
    secagg.share_keys(state[a], config, ads, public)
    again = secagg.SiteSecrets.from_json(state[a].to_json())
    assert again == state[a]


def test_config_refuses_small_cohorts_and_wrong_parameters() -> None:
    with pytest.raises(SecAggFailure) as caught:
        SecAggConfig(
            run="r", round_number=1, nonce="n", cohort=("a",), dim=3, clip=1.0, max_weight=10.0
        )
    assert caught.value.code == "cohort_size"
    config = config_for(5)
    assert secagg.SecAggConfig.from_json(config.to_json()) == config
    with pytest.raises(SecAggFailure):
        secagg.SecAggConfig.from_json(config.to_json() | {"threshold": 2})
    with pytest.raises(SecAggFailure):
        secagg.SecAggConfig.from_json(config.to_json() | {"cohort": ["b", "a", "c"]})
    with pytest.raises(SecAggFailure):
        secagg.SecAggConfig.from_json({"run": 1})
