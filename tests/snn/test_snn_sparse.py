"""The batched engine's difference propagation against whole-row propagation, and the NumPy LIF
it runs on against independent references."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import classes_tool.snn as snn  # noqa: E402
from classes_tool.snn import faults as F  # noqa: E402
from classes_tool.snn import step_batches  # noqa: E402
from classes_tool.snn.campaign import SpikingCampaign  # noqa: E402
from classes_tool.snn.golden_batch import GoldenBatch  # noqa: E402
from classes_tool.snn.layers import lif_dynamics, lif_numpy  # noqa: E402
from classes_tool.snn.sparse_propagation import (  # noqa: E402
    NO_DIFFERENCE,
    lif_on_difference,
    updated_elements,
)


def ref_lif(cur, beta, thr, reset="subtract", refr=None, gain=None, mem_set=None):
    """The LIF equations one step at a time in float64 (exact on the grids used below)."""
    steps, m = cur.shape
    mem, spk, count = np.zeros(m), np.zeros(m), np.zeros(m)
    out = []
    for t in range(steps):
        active = count <= 0 if refr is not None else np.ones(m, bool)
        inp = cur[t] * (1.0 if gain is None else gain) * active
        mem = beta * mem + inp - spk * thr if reset == "subtract" else beta * mem * (1 - spk) + inp
        if mem_set is not None and t in mem_set:
            idx, value = mem_set[t]
            mem[idx] = value
        spk = ((mem > thr) & active).astype(float)
        if refr is not None:
            count = np.where(spk > 0, refr, np.maximum(count - 1, 0))
        out.append(spk)
    return np.stack(out)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_numpy_matches_reference_on_exact_grid(reset):
    rng = np.random.default_rng(0)
    steps, m = 10, 40
    cur = rng.integers(-2, 10, (steps, m)) / 8.0  # multiples of 1/8: float32 arithmetic is exact
    beta = rng.choice([0.5, 0.75, 1.0], m)
    thr = rng.choice([0.75, 1.0, 1.5], m)
    refr = rng.integers(0, 3, m).astype(float)
    gain = rng.choice([0.5, 1.0, 2.0], m)
    ops = {3: [lambda mem: mem.__setitem__(np.array([1, 5]), np.float32(2.0))]}
    got = lif_numpy(cur.astype(np.float32), beta, thr, reset, refractory=refr, gain=gain,
                    mem_ops=ops)
    want = ref_lif(cur, beta, thr, reset, refr, gain, {3: (np.array([1, 5]), 2.0)})
    np.testing.assert_array_equal(got, want)
    assert 0 < got.sum() < got.size
    plain = lif_numpy(cur.astype(np.float32), beta, thr, reset)
    np.testing.assert_array_equal(plain, ref_lif(cur, beta, thr, reset))


def test_lif_numpy_matches_tensorflow_and_is_the_same_for_any_subset():
    rng = np.random.default_rng(1)
    steps, m = 16, 3000
    cur = rng.normal(0.4, 0.8, (steps, m)).astype(np.float32)
    beta = rng.uniform(0.5, 1.0, m).astype(np.float32)
    thr = rng.uniform(0.5, 1.5, m).astype(np.float32)
    spk = lif_numpy(cur, beta, thr)
    tf_spk = lif_dynamics(tf.constant(cur.T[:, :, None]), beta[:, None], thr[:, None]).numpy()
    np.testing.assert_array_equal(spk, tf_spk[:, :, 0].T)  # unfused float32, like eager TF
    cols = np.sort(rng.choice(m, 57, replace=False))
    np.testing.assert_array_equal(lif_numpy(cur[:, cols], beta[cols], thr[cols]), spk[:, cols])


@pytest.fixture(scope="module")
def conv_snn():
    keras.utils.set_random_seed(11)
    layers = [keras.layers.Conv2D(4, 3, padding="same", name="c1"), snn.LIF(0.8, 0.6, name="l1"),
              keras.layers.AveragePooling2D(2, name="p1"),
              keras.layers.Conv2D(6, 3, padding="same", name="c2"), snn.LIF(0.8, 0.6, name="l2"),
              keras.layers.MaxPooling2D(2, name="p2"), keras.layers.Flatten(name="fl"),
              keras.layers.Dense(3, name="fc"), snn.LIF(0.8, 0.6, name="l3")]
    model = snn.unroll(layers, (6, 8, 8, 2))
    x = snn.rate_encode(np.random.default_rng(2).random((7, 8, 8, 2)) * 0.7, 6, seed=3)
    golden = model.predict(x, verbose=0)
    assert 0 < golden.sum() < golden.size * 6  # neither silent nor saturated
    return model, x


def _mixed_campaign(model, x, seed=4):
    camp = SpikingCampaign(model, x.shape[1:], seed=seed)
    for fm in (F.DeadNeuron(), F.SaturatedNeuron(), F.StuckNeuron(prob=0.3),
               F.ParametricNeuron("threshold"), F.ParametricNeuron("refractory"),
               F.MembraneBitFlip(), F.MembraneStuck(1.5), F.SpikeFlip()):
        camp.inject_complete(fm, ["l1", "l2", "l3"], sampling_k=2)
    for fm in (F.DeadSynapse(), F.PerturbedSynapse(), F.SynapseBitFlip(fmt="float32")):
        camp.inject_complete(fm, ["td_c1", "td_c2", "td_fc"], sampling_k=2)
    camp.inject_complete(F.StuckSynapse(2.0), ["td_c2"], sampling_k=2, window=(1, 4))
    # rounds over several layers, and two changes of the same weight in one round
    camp.then_inject([F.Fault(F.DeadNeuron(), "l1", count=3),
                      F.Fault(F.PerturbedSynapse(1.7), "td_c2", count=2),
                      F.Fault(F.ParametricNeuron("leak", 0.5), "l2", count=4)])
    camp.then_inject([F.Fault(F.StuckSynapse(1.0), "td_c1", [(1, 1, 0, 2)]),
                      F.Fault(F.PerturbedSynapse(-3.0), "td_c1", [(1, 1, 0, 2)]),
                      F.Fault(F.SpikeFlip(step=2), "l3", count=2)])
    camp.then_inject([F.Fault(F.ParametricNeuron("gain", 3.0), "l1", count=5),
                      F.Fault(F.DeadNeuron(), "l1", count=5)])
    return camp


def test_difference_propagation_equals_whole_rows(conv_snn):
    model, x = conv_snn
    camp = _mixed_campaign(model, x)
    sparse = camp.run((x, None), progress="silent", max_rows=60).scores
    whole = camp.run((x, None), progress="silent", early_stop=False, batch_size=4).scores
    plain = camp.run((x, None), progress="silent", rounds_per_pass=1, late_start=False,
                     early_stop=False).scores
    np.testing.assert_array_equal(sparse, whole)
    np.testing.assert_array_equal(sparse, plain)
    golden = camp.results.golden_scores
    changed = np.any(sparse != golden[None], axis=-1)
    assert 0.05 < changed.mean() < 0.95  # the faults matter, and early stop has work to skip


def _reweighted(model, layer_name, site, value):
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    k, b = ref.get_layer(layer_name).get_weights()
    k[site] = value
    ref.get_layer(layer_name).set_weights([k, b])
    return ref


def test_synapse_faults_on_the_same_weight_act_in_fault_order(conv_snn):
    model, x = conv_snn
    site = (1, 1, 0, 2)
    camp = SpikingCampaign(model, x.shape[1:])
    camp.inject([F.Fault(F.StuckSynapse(1.0), "td_c1", [site]),
                 F.Fault(F.PerturbedSynapse(-3.0), "td_c1", [site])])   # 1.0, then times -3
    camp.then_inject([F.Fault(F.StuckSynapse(2.0), "td_c1", [site]),
                      F.Fault(F.StuckSynapse(3.0), "td_c1", [site])])   # the last one wins
    camp.then_inject([F.Fault(F.PerturbedSynapse(-3.0), "td_c1", [site]),
                      F.Fault(F.StuckSynapse(1.0), "td_c1", [site])])
    got = camp.run((x, None), progress="silent").scores
    for r, value in enumerate((-3.0, 3.0, 1.0)):
        want = _reweighted(model, "td_c1", site, value).predict(x, verbose=0)
        np.testing.assert_allclose(got[r], want, atol=1e-4)
    whole = camp.run((x, None), progress="silent", rounds_per_pass=1, late_start=False,
                     early_stop=False).scores
    np.testing.assert_array_equal(got, whole)


def test_overlapping_windows_on_one_weight_act_in_fault_order_per_step(conv_snn):
    model, x = conv_snn
    site = (1, 1, 0, 2)
    camp = SpikingCampaign(model, x.shape[1:])
    camp.inject([F.Fault(F.StuckSynapse(2.0), "td_c1", [site], window=(0, 4)),
                 F.Fault(F.StuckSynapse(3.0), "td_c1", [site], window=(2, 6))])
    got = camp.run((x, None), progress="silent").scores[0]
    # the weight is 2.0 at steps 0-1 and 3.0 at steps 2-5: the layer's output per step from the
    # two reweighted models, carried through the rest of the network
    steps = x.shape[1]
    outs = [_reweighted(model, "td_c1", site, v).get_layer("td_c1")(x).numpy() for v in (2, 3)]
    cur = np.concatenate([outs[0][:, :2], outs[1][:, 2:]], axis=1)
    assert cur.shape[1] == steps
    h = cur
    for ly in model.layers[model.layers.index(model.get_layer("td_c1")) + 1:]:
        h = np.asarray(ly(h))
    np.testing.assert_allclose(got, h, atol=1e-4)
    only_last = SpikingCampaign(model, x.shape[1:])
    only_last.inject([F.Fault(F.StuckSynapse(3.0), "td_c1", [site])])
    assert not np.array_equal(got, only_last.run((x, None), progress="silent").scores[0])


def test_updates_of_one_element_are_added_in_fault_order():
    bt = GoldenBatch(np.zeros((2, 3, 1), np.float32), [np.ones((2, 3, 4), np.float32)])
    big = np.float32(2.0 ** 24)  # 1 + 2^24 rounds to 2^24 in float32: the order shows
    key, feat = np.array([1 * 3 + 2]), np.array([3])  # row 1, step 2, feature 3
    upd = [(key, feat, np.array([big])), (key, feat, np.array([-big]))]
    diff = updated_elements(bt, 0, upd, 4)
    assert diff.keys.tolist() == [5] and diff.feat.tolist() == [3] and diff.vals.tolist() == [0]
    assert updated_elements(bt, 0, upd[::-1], 4).empty  # (1 - 2^24) + 2^24 = 1: golden


def test_lif_difference_keeps_only_changed_slices(conv_snn):
    """A dead neuron on golden input differs exactly at the steps where it spiked."""
    model, x = conv_snn
    camp = SpikingCampaign(model, x.shape[1:])
    gold = camp.golden(x)
    bt = GoldenBatch(x, gold)
    i = camp.net.index["l1"]
    site = (3, 4, 1)
    fault = camp._resolve(F.Fault(F.DeadNeuron(), "l1", [site]))
    # round 1 of a chunk
    diff = lif_on_difference(camp.net.layers[i], i, bt, NO_DIFFERENCE, [(1, fault)])
    n, steps = len(x), x.shape[1]
    fired = gold[i][(slice(None), slice(None)) + site] > 0  # (samples, steps)
    s, t = np.nonzero(fired)
    np.testing.assert_array_equal(diff.keys, (n + s) * steps + t)
    want = gold[i][s, t].copy()
    want[(slice(None),) + site] = 0.0
    np.testing.assert_array_equal(diff.vals.reshape(want.shape), want)
    assert 0 < len(s) < n * steps


def test_membrane_readout_model_batched_equals_plain():
    keras.utils.set_random_seed(5)
    layers = [keras.layers.Dense(5, name="fc1"), snn.LIF(0.7, 0.5, name="l1"),
              keras.layers.Dense(3, name="fc2")]
    model = snn.unroll(layers, (5, 4), readout="membrane")
    x = snn.rate_encode(np.random.default_rng(0).random((6, 4)), 5, seed=1)
    camp = SpikingCampaign(model, x.shape[1:], seed=1)
    camp.inject_complete(F.DeadNeuron(), ["l1"])
    camp.inject_complete(F.PerturbedSynapse(), ["td_fc1", "td_fc2"], sampling_k=3)
    sparse = camp.run((x, None), progress="silent").scores
    plain = camp.run((x, None), progress="silent", rounds_per_pass=1, late_start=False,
                     early_stop=False).scores
    np.testing.assert_array_equal(sparse, plain)
    assert np.any(sparse != camp.results.golden_scores[None])


def test_whole_rows_after_a_layer_of_another_kind_equal_plain():
    """A layer that is neither step-wise nor LIF switches to whole rows; later faults add the
    rows of their rounds."""
    keras.utils.set_random_seed(6)
    inp = keras.Input((5, 4))
    h = keras.layers.TimeDistributed(keras.layers.Dense(6), name="td_fc1")(inp)
    h = snn.LIF(0.8, 0.5, name="l1")(h)
    h = keras.layers.Activation("linear", name="act")(h)
    h = keras.layers.TimeDistributed(keras.layers.Dense(3), name="td_fc2")(h)
    h = snn.LIF(0.8, 0.5, name="l2")(h)
    model = keras.Model(inp, snn.Readout("count", name="readout")(h))
    x = snn.rate_encode(np.random.default_rng(3).random((5, 4)), 5, seed=2)
    camp = SpikingCampaign(model, x.shape[1:], seed=2)
    camp.inject_complete(F.DeadNeuron(), ["l1"], sampling_k=3)
    camp.inject_complete(F.PerturbedSynapse(), ["td_fc2"], sampling_k=3)
    camp.then_inject([F.Fault(F.SaturatedNeuron(), "l1", count=2),
                      F.Fault(F.PerturbedSynapse(-2.0), "td_fc2", count=2),
                      F.Fault(F.SpikeFlip(), "l2")])
    camp.then_inject([F.Fault(F.ParametricNeuron("threshold", 1.0), "l1"),  # changes nothing
                      F.Fault(F.PerturbedSynapse(-2.0), "td_fc2", count=2)])
    sparse = camp.run((x, None), progress="silent", max_rows=12).scores
    alone = camp.run((x, None), progress="silent", rounds_per_pass=1).scores
    plain = camp.run((x, None), progress="silent", rounds_per_pass=1, late_start=False,
                     early_stop=False).scores
    np.testing.assert_array_equal(sparse, plain)
    np.testing.assert_array_equal(alone, plain)
    assert np.any(sparse != camp.results.golden_scores[None])


def test_aligned_batches_reach_tensorflow_unchanged():
    a = step_batches.aligned_array((37, 3))
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    assert a.ctypes.data % step_batches.ALIGNMENT == 0
    np.testing.assert_array_equal(step_batches.as_tensor(a).numpy(), a)
    odd = np.arange(12, dtype=np.float32)[1:].reshape(1, 11)  # unaligned view: copied
    np.testing.assert_array_equal(step_batches.as_tensor(odd).numpy(), odd)
    sizes = [step_batches.bucket_size(n) for n in range(1, 20000, 7)]
    assert all(s >= n for s, n in zip(sizes, range(1, 20000, 7), strict=True))
    assert len(set(sizes)) < 60
