"""Each fault model against a deliberately simple NumPy reference of a tiny SNN; batching
equivalence; campaign save/load; outcome classes."""

import json
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import classes_tool.snn as snn  # noqa: E402
from classes_tool.errors import UserError  # noqa: E402
from classes_tool.snn import faults as F  # noqa: E402
from classes_tool.snn.campaign import SpikingCampaign  # noqa: E402
from classes_tool.snn.metrics import CLASSES, classify_snn, d_codes  # noqa: E402

T = 8


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(4)
    layers = [keras.layers.Dense(6, name="fc1"), snn.LIF(beta=0.8, name="lif1"),
              keras.layers.Dense(3, name="fc2"), snn.LIF(beta=0.9, name="lif2")]
    model = snn.unroll(layers, (T, 5), readout="count")
    rng = np.random.default_rng(0)
    model.get_layer("td_fc1").set_weights([rng.uniform(-0.3, 1.0, (5, 6)).astype(np.float32),
                                           np.zeros(6, np.float32)])
    model.get_layer("td_fc2").set_weights([rng.uniform(-0.5, 1.0, (6, 3)).astype(np.float32),
                                           np.full(3, 0.1, np.float32)])
    x = snn.rate_encode(rng.random((12, 5)), T, seed=2)
    y = rng.integers(0, 3, 12)
    return model, x, y


def ref_lif(cur, beta, thr, refr=None, gain=None, mem_fn=None, out_fn=None):
    """NumPy LIF (subtract reset) with optional per-neuron params and fault hooks."""
    n, steps, f = cur.shape
    beta = np.broadcast_to(beta, (f,)).astype(np.float64)
    thr = np.broadcast_to(thr, (f,)).astype(np.float64)
    refr = np.zeros(f) if refr is None else np.asarray(refr, float)
    gain = np.ones(f) if gain is None else np.asarray(gain, float)
    mem = np.zeros((n, f))
    spk = np.zeros((n, f))
    count = np.zeros((n, f))
    out = []
    for t in range(steps):
        active = count <= 0
        inp = cur[:, t] * gain * active
        mem = beta * mem + inp - spk * thr
        if mem_fn is not None:
            mem = mem_fn(t, mem)
        spk = ((mem > thr) & active).astype(float)
        count = np.where(spk > 0, refr, np.maximum(count - 1, 0))
        out.append(spk)
    s = np.stack(out, 1)
    return s if out_fn is None else out_fn(s)


def ref_net(model, x, lif1=None, w1=None, w2=None):
    """The tiny network in NumPy; `lif1` = kwargs for ref_lif of the first layer."""
    k1, b1 = model.get_layer("td_fc1").get_weights()
    k2, b2 = model.get_layer("td_fc2").get_weights()
    k1 = k1 if w1 is None else w1
    k2 = k2 if w2 is None else w2
    kw = {"beta": 0.8, "thr": 1.0}
    kw.update(lif1 or {})
    s1 = ref_lif(x.astype(np.float64) @ k1 + b1, **kw)
    s2 = ref_lif(s1 @ k2 + b2, 0.9, 1.0)
    return s2.sum(axis=1)


def run_one(model, x, faults):
    camp = SpikingCampaign(model, x.shape[1:], seed=0)
    camp.inject(faults)
    return camp.run((x, None), progress="silent").scores[0]


def test_golden_matches_model_and_reference(tiny):
    model, x, _ = tiny
    camp = SpikingCampaign(model, x.shape[1:])
    golden = camp.golden(x)[-1]
    np.testing.assert_array_equal(golden, model.predict(x, verbose=0))
    np.testing.assert_array_equal(golden, ref_net(model, x))
    assert 0 < golden.sum() < x.shape[0] * 3 * T  # neither silent nor saturated


def _force(j, value, steps=slice(None)):
    def out_fn(s):
        s = s.copy()
        s[:, steps, j] = value
        return s
    return out_fn


NEURON_CASES = {
    "dead": (F.DeadNeuron(), None, {"out_fn": _force(2, 0.0)}),
    "saturated": (F.SaturatedNeuron(), None, {"out_fn": _force(2, 1.0)}),
    "stuck_value_window": (F.StuckNeuron(value=1), (2, 5), {"out_fn": _force(2, 1.0, slice(2, 5))}),
    "stuck_prob_0": (F.StuckNeuron(prob=0.0), None, {"out_fn": _force(2, 0.0)}),
    "stuck_prob_1": (F.StuckNeuron(prob=1.0), None, {"out_fn": _force(2, 1.0)}),
    "threshold": (F.ParametricNeuron("threshold", 0.5), None,
                  {"thr": np.where(np.arange(6) == 2, 0.5, 1.0)}),
    "leak": (F.ParametricNeuron("leak", 0.25), None,
             {"beta": np.where(np.arange(6) == 2, 0.2, 0.8)}),
    "gain": (F.ParametricNeuron("gain", 3.0), None,
             {"gain": np.where(np.arange(6) == 2, 3.0, 1.0)}),
    "refractory": (F.ParametricNeuron("refractory", 2.0), None,
                   {"refr": np.where(np.arange(6) == 2, 2.0, 0.0)}),
    "membrane_stuck": (F.MembraneStuck(5.0), (3, 4), {}),
    "membrane_bitflip_f32": (F.MembraneBitFlip(bit=30, step=1), None, {}),
    "membrane_bitflip_int8": (F.MembraneBitFlip(bit=6, step=2, fmt="int8", scale=0.05), None, {}),
    "spike_flip": (F.SpikeFlip(step=3), None, {}),
}


def _membrane_ref(name):
    if name == "membrane_stuck":
        def fn(t, mem):
            mem = mem.copy()
            if t == 3:
                mem[:, 2] = 5.0
            return mem
        return {"mem_fn": fn}
    if name == "membrane_bitflip_f32":
        def fn(t, mem):
            mem = mem.copy()
            if t == 1:
                mem[:, 2] = [F.flip_float32(v, 30) for v in mem[:, 2]]
            return mem
        return {"mem_fn": fn}
    if name == "membrane_bitflip_int8":
        def fn(t, mem):
            mem = mem.copy()
            if t == 2:
                q = F.quantize_int8(mem[:, 2], 0.05, 0)
                mem[:, 2] = mem[:, 2] + (F.flip_int8(q, 6) - q) * 0.05
            return mem
        return {"mem_fn": fn}
    if name == "spike_flip":
        def out_fn(s):
            s = s.copy()
            s[:, 3, 2] = 1 - s[:, 3, 2]
            return s
        return {"out_fn": out_fn}
    return {}


@pytest.mark.parametrize("name", list(NEURON_CASES))
def test_neuron_fault_matches_reference(tiny, name):
    model, x, _ = tiny
    fm, window, ref_kw = NEURON_CASES[name]
    ref_kw = dict(ref_kw)
    ref_kw.update(_membrane_ref(name))
    got = run_one(model, x, [F.Fault(fm, "lif1", [(2,)], window=window)])
    want = ref_net(model, x, lif1=ref_kw)
    np.testing.assert_allclose(got, want, atol=1e-4)
    if name in ("dead", "saturated", "threshold", "spike_flip", "membrane_stuck"):
        assert not np.array_equal(want, ref_net(model, x)), "fault should change the output"


def test_dead_output_neuron_gives_zero_count(tiny):
    model, x, _ = tiny
    got = run_one(model, x, [F.Fault(F.DeadNeuron(), "lif2", [(1,)])])
    golden = model.predict(x, verbose=0)
    np.testing.assert_array_equal(got[:, 1], 0)
    np.testing.assert_array_equal(got[:, [0, 2]], golden[:, [0, 2]])


SYNAPSE_CASES = {
    "dead": (F.DeadSynapse(), lambda w, k: 0.0),
    "stuck": (F.StuckSynapse(2.5), lambda w, k: 2.5),
    "perturbed": (F.PerturbedSynapse(-1.0), lambda w, k: -w),
    "saturated_mild": (F.SaturatedSynapse("mild"),
                       lambda w, k: np.percentile(k, 75) + 2.25 * np.subtract(*np.percentile(k, [75, 25]))),
    "saturated_extreme_neg": (F.SaturatedSynapse("extreme", -1),
                              lambda w, k: np.percentile(k, 25) - 4.5 * np.subtract(*np.percentile(k, [75, 25]))),
    "bitflip_f32": (F.SynapseBitFlip(bit=30, fmt="float32"), lambda w, k: F.flip_float32(w, 30)),
    "bitflip_int8": (F.SynapseBitFlip(bit=7, scale=0.01),
                     lambda w, k: w + (F.flip_int8(F.quantize_int8(w, 0.01, 0), 7)
                                       - F.quantize_int8(w, 0.01, 0)) * 0.01),
}


@pytest.mark.parametrize("name", list(SYNAPSE_CASES))
def test_synapse_fault_matches_reweighted_model(tiny, name):
    model, x, _ = tiny
    fm, value = SYNAPSE_CASES[name]
    k1 = model.get_layer("td_fc1").get_weights()[0].astype(np.float64)
    w1 = k1.copy()
    w1[3, 2] = value(float(np.float32(k1[3, 2])), model.get_layer("td_fc1").get_weights()[0])
    got = run_one(model, x, [F.Fault(fm, "td_fc1", [(3, 2)])])
    np.testing.assert_allclose(got, ref_net(model, x, w1=w1), atol=1e-4)


def test_conv_synapse_fault_matches_reweighted_keras_model():
    keras.utils.set_random_seed(7)
    layers = [keras.layers.Conv2D(3, 3, padding="same", name="c1"), snn.LIF(0.8, 0.5, name="l1"),
              keras.layers.Conv2D(2, 3, strides=2, padding="valid", name="c2"),
              snn.LIF(0.8, 0.5, name="l2"), keras.layers.Flatten(name="fl"),
              keras.layers.Dense(3, name="fc"), snn.LIF(0.8, 0.5, name="l3")]
    model = snn.unroll(layers, (4, 7, 7, 2))
    x = snn.rate_encode(np.random.default_rng(1).random((6, 7, 7, 2)), 4, seed=1)
    for layer_name, site, fm in (("td_c1", (0, 2, 1, 2), F.StuckSynapse(3.0)),
                                 ("td_c2", (2, 1, 0, 1), F.StuckSynapse(-4.0)),
                                 ("td_c2", (1, 1, 2, 0), F.DeadSynapse())):
        got = run_one(model, x, [F.Fault(fm, layer_name, [site])])
        ref = keras.models.clone_model(model)
        ref.set_weights(model.get_weights())
        k, b = ref.get_layer(layer_name).get_weights()
        k[site] = fm.params.get("value", 0.0)
        ref.get_layer(layer_name).set_weights([k, b])
        np.testing.assert_allclose(got, ref.predict(x, verbose=0), atol=1e-4)


def test_batched_rounds_equal_one_at_a_time(tiny):
    model, x, y = tiny
    camp = SpikingCampaign(model, x.shape[1:], seed=5)
    for fm in (F.DeadNeuron(), F.SaturatedNeuron(), F.RandomNeuron(), F.StuckNeuron(prob=0.5),
               F.ParametricNeuron("threshold"), F.MembraneBitFlip(), F.SpikeFlip()):
        camp.inject_complete(fm, ["lif1", "lif2"], sampling_k=3)
    for fm in (F.DeadSynapse(), F.PerturbedSynapse(), F.SynapseBitFlip()):
        camp.inject_complete(fm, ["td_fc1", "td_fc2"], sampling_k=3)
    camp.then_inject([F.Fault(F.DeadNeuron(), "lif1", count=2),
                      F.Fault(F.StuckSynapse(1.0), "td_fc2", window=(2, 6))])
    batched = camp.run((x, y), progress="silent", max_rows=40).scores
    plain = camp.run((x, y), progress="silent", rounds_per_pass=1, late_start=False,
                     early_stop=False, batch_size=5).scores
    np.testing.assert_array_equal(batched, plain)
    for r, rnd in enumerate(camp.rounds):  # and equal to separate one-round campaigns
        single = SpikingCampaign(model, x.shape[1:])
        single.rounds = [rnd]
        np.testing.assert_array_equal(single.run((x, y), progress="silent").scores[0],
                                      batched[r])
    assert not np.all(batched == camp.results.golden_scores[None])


def test_random_sites_are_unique_and_seeded(tiny):
    model, x, _ = tiny
    a = SpikingCampaign(model, x.shape[1:], seed=3)
    b = SpikingCampaign(model, x.shape[1:], seed=3)
    for c in (a, b):
        c.inject([F.Fault(F.DeadNeuron(), "lif1", count=4)])
    assert a.rounds[0][0].sites == b.rounds[0][0].sites
    assert len(set(a.rounds[0][0].sites)) == 4
    with pytest.raises(UserError):
        F.Fault(F.DeadNeuron(), "lif1", [(1,), (1,)])
    with pytest.raises(UserError):
        a.inject([F.Fault(F.DeadSynapse(), "lif1")])
    with pytest.raises(UserError):
        a.inject([F.Fault(F.DeadNeuron(), "lif1", [(9,)])])


def test_round_management(tiny):
    model, x, _ = tiny
    c = SpikingCampaign(model, x.shape[1:])
    c.inject([F.Fault(F.DeadNeuron(), "lif1", [(0,)])])
    c.then_inject([F.Fault(F.DeadNeuron(), "lif1", [(1,)])])
    c.inject_complete(F.SaturatedNeuron(), ["lif2"])
    assert len(c.rounds) == 2 + 3
    c.eject(round_idx=0)
    assert c.rounds[0][0].sites == [(1,)]
    c.eject()
    assert c.rounds == []
    with pytest.raises(UserError):
        c.run((x, None), progress="silent")


def test_save_load_roundtrip(tiny, tmp_path):
    model, x, y = tiny
    c = SpikingCampaign(model, x.shape[1:], name="rt", seed=9)
    c.inject_complete(F.ParametricNeuron("leak"), ["lif1"], sampling_k=2)
    c.then_inject([F.Fault(F.SynapseBitFlip(fmt="float32"), "td_fc2", count=2)])
    res = c.run((x, y), progress="silent")
    path = c.save(tmp_path / "camp.json")
    assert json.loads(path.read_text())["rounds"][0][0]["model"]["name"] == "leak"
    loaded = SpikingCampaign.load(path, model)
    assert [[f.to_dict() for f in r] for r in loaded.rounds] == \
        [[f.to_dict() for f in r] for r in c.rounds]
    np.testing.assert_array_equal(loaded.results.scores, res.scores)
    np.testing.assert_array_equal(loaded.results.accuracy(), res.accuracy())
    again = loaded.run((x, y), progress="silent")
    np.testing.assert_array_equal(again.scores, res.scores)
    assert loaded.duration > 0


def test_classes_are_half_open():
    edges = [0.0, 4.999, 5.0, 9.999, 10.0, 19.999, 20.0, 1e9]
    assert [CLASSES[i] for i in d_codes(np.array(edges))] == \
        ["d<5", "d<5", "5<=d<10", "5<=d<10", "10<=d<20", "10<=d<20", "d>=20", "d>=20"]
    golden = np.array([[10.0, 0.0]])
    top = 1 / (1 + np.exp(-10.0))

    def row_for(d):  # a faulty row whose top-class softmax moved by d percent
        p = (1 - d / 100) * top
        return [np.log(p / (1 - p)), 0.0]

    faulty = np.array([[10.0, 0.0], [10.0, 0.001], row_for(7.0), row_for(15.0), row_for(30.0),
                       [0.0, 1.0], [np.nan, 0.0]])
    c = classify_snn(golden, faulty)
    assert [CLASSES[i] for i in c["code"]] == \
        ["masked", "d<5", "5<=d<10", "10<=d<20", "d>=20", "sdc1", "due"]
    np.testing.assert_allclose(c["d"][2:5], [7.0, 15.0, 30.0], rtol=1e-6)


@pytest.mark.parametrize("data, message", [
    ({"name": "threshold", "factor": "lots"}, "parameter 'factor' must be a number"),
    ({"name": "threshold", "factr": 1.2}, "has no parameter 'factr' (it takes factor)"),
    ({"name": "stuck_synapse"}, "needs 'value'"),
    ({"name": "membrane_bitflip", "bit": 2.5}, "parameter 'bit' must be an integer"),
    ({"name": "saturated_synapse", "fence": "wide"}, "must be 'mild' or 'extreme'"),
    ({"name": "dead_neuron", "prob": 0.5}, "(it takes none)"),
    ({"name": "stuck_neuron", "prob": 1.5}, "parameter 'prob' must lie in [0, 1], got 1.5"),
    ({"name": "random_neuron", "prob": -0.1}, "'prob' must lie in [0, 1]"),
    ({"name": "stuck_neuron", "value": 0.5}, "'value' must be 0 or 1 (no spike or a spike)"),
    ({"name": "stuck_neuron", "value": 1, "prob": 0.5}, "give 'prob' (a neuron spiking at"),
    ({"name": "saturated_synapse", "polarity": 0}, "'polarity' must be 1 or -1, got 0"),
    ({"name": "synapse_bitflip", "scale": 0}, "'scale' must be positive"),
    ({"name": "synapse_bitflip", "zero_point": 300}, "'zero_point' must lie in [-128, 127]"),
    ({"name": "spike_flip", "step": -1}, "'step' must be at least 0"),
    ({"name": "threshold", "factor": 0}, "'factor' must be positive (it multiplies the neuron's"),
    ({"name": "refractory", "factor": -2.0}, "'factor' must be positive"),
    ({"name": "leak", "factor": -0.5}, "'factor' must be positive"),
    ({"name": "gain", "factor": 0.0}, "'factor' must be positive"),
    ({"name": "synapse_bitflip", "bit": 8}, "'bit' must lie in 0..7 for int8"),
    ({"name": "membrane_bitflip", "bit": 32}, "'bit' must lie in 0..31 for float32"),
    ({"name": "membrane_bitflip", "format": "int8", "bit": 9}, "must lie in 0..7 for int8"),
])
def test_fault_model_parameters_are_checked_when_made(data, message):
    """Before the campaign, not when the first fault of that model runs."""
    with pytest.raises(UserError, match=re.escape(message)):
        F.FaultModel.from_dict(data)


def test_bounds_that_are_faults_themselves_are_accepted():
    """A synapse's weight may be negated or zeroed by its fault; a stuck neuron may be at 0 or 1;
    step 0 and the last bit of a format are real sites."""
    for data in ({"name": "perturbed_synapse", "factor": -1.0},
                 {"name": "perturbed_synapse", "factor": 0.0},
                 {"name": "stuck_neuron", "value": 0}, {"name": "stuck_neuron", "prob": 1.0},
                 {"name": "spike_flip", "step": 0}, {"name": "membrane_bitflip", "bit": 31},
                 {"name": "threshold", "factor": 1e-3}):
        assert F.FaultModel.from_dict(data).params == {k: v for k, v in data.items()
                                                       if k != "name"}
