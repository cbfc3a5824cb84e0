"""The compiled Network and Trainer: checks made once, unaligned buffers, dropout steps.

The rest of the suite drives them through ``fastmlp.train`` and ``MLP``; here they are
held to the reference directly where only they can show it: a dropout step needs the
masks the Trainer drew.
"""

import pickle

import numpy as np
import pytest
from fastmlp._network import Network
from fastmlp._trainer import Trainer
from scipy import sparse

import fastmlp
from fastmlp import MLP
from fastmlp import _kernels as K
from fastmlp import reference as R

DTYPES = [np.float32, np.float64]


def rng_for(*key):
    return np.random.default_rng(abs(hash(repr(key))) % 2**32)


def random_model(rng, sizes, dtype, activation="relu"):
    weights = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes, sizes[1:])
    ]
    biases = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    return MLP.from_weights(weights, biases, activation=activation, dtype=dtype)


# -- Network: built and checked once ---------------------------------------------------


@pytest.mark.parametrize(
    "sizes, acts, loss, dtype, match",
    [
        ((4,), [], "cross_entropy", np.float32, "1 to 64 layers"),
        ((4, 3), ["relu", "identity"], "cross_entropy", np.float32, "one activation"),
        ((4, 0), ["identity"], "cross_entropy", np.float32, "layer sizes"),
        ((4, 3), ["swish"], "cross_entropy", np.float32, "unknown activation"),
        ((4, 3), ["identity"], "hinge", np.float32, "unknown activation or loss"),
        ((4, 3), ["relu"], "cross_entropy", np.float32, "softmax"),
        ((4, 3), ["identity"], "cross_entropy", np.float16, "float32 or float64"),
    ],
)
def test_network_refuses_bad_layouts(sizes, acts, loss, dtype, match):
    with pytest.raises(ValueError, match=match):
        Network(sizes, acts, loss, dtype)


def test_network_layout_and_params():
    net = Network((5, 4, 3), ["relu", "identity"], "cross_entropy", np.float64)
    assert net.sizes == (5, 4, 3)
    assert net.n_params == 5 * 4 + 4 + 4 * 3 + 3
    assert net.slices() == [(0, 20), (24, 36)]
    assert net.params.shape == (net.n_params,) and not net.params.any()
    with pytest.raises(ValueError, match="39 values"):
        Network((5, 4, 3), ["relu", "identity"], "cross_entropy", np.float64, np.zeros(38))
    with pytest.raises(ValueError, match="float64"):
        Network((5, 4, 3), ["relu", "identity"], "cross_entropy", np.float64, np.zeros(39, "f4"))
    # A usable buffer is taken in place (writes into it reach the network).
    p = np.arange(39.0)
    assert Network((5, 4, 3), ["relu", "identity"], "cross_entropy", np.float64, p).params is p


def test_parallel_blocks_is_the_serial_rule():
    net = Network((5, 3), ["identity"], "cross_entropy", np.float32)
    assert [net.parallel_blocks(n) for n in (1, 63, 64, 256, 1024, 1025)] == [1, 1, 2, 4, 4, 5]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 5, 63])
@pytest.mark.parametrize("softmax", [True, False])
def test_outputs_is_forward_of_one_block(dtype, n, softmax):
    """The request path (Network.outputs) gives forward's bits, in a new array."""
    model = random_model(rng_for("outputs", dtype, n), (37, 19, 6, 3), dtype)
    X = rng_for("x", n).random((n, 37)).astype(dtype)
    X[:, ::3] = 0  # the one-row kernel skips the rows of W of zero inputs
    expected = np.empty((n, 3), dtype)
    model._network.forward(X, expected, softmax=softmax, n_threads=1)
    got = model._network.outputs(X, softmax)
    assert got.dtype == dtype and got.shape == (n, 3) and got.flags.c_contiguous
    assert np.array_equal(got, expected)
    assert not np.array_equal(got, model._network.outputs(X, not softmax))
    with pytest.raises(ValueError, match="NaN or infinity"):
        model._network.outputs(np.where(X == 0, np.nan, X).astype(dtype), softmax)


@pytest.mark.skipif(not K.VECMAT_DENSE_BITS, reason="this compiler's build promises no bits")
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_predicts_the_same_alone_or_in_a_batch(dtype):
    """One row (fm_vecmat) gets the bits it gets among others (fm_dense's tiles, in
    parallel blocks): a prediction does not depend on the request it came in."""
    model = random_model(rng_for("alone", dtype), (37, 19, 6, 3), dtype)
    X = rng_for("x alone").random((300, 37)).astype(dtype)
    X[:, ::3] = 0
    batch = model.predict_proba(X)
    alone = np.concatenate([model.predict_proba(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(alone, batch)


@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_leaves_every_other_input_to_the_checks(dtype, not_ready_requests):
    """What forward would not read as it stands gets None, for model._outputs to check and
    convert: another dtype or byte order, another layout or shape, no rows or more than
    one block of them, an unaligned buffer, a subclass, a list."""
    net = random_model(rng_for("outputs-none", dtype), (8, 4, 3), dtype)._network
    X = np.ones((4, 8), dtype)
    others = not_ready_requests(X)
    assert [net.outputs(other, True) for other in others] == [None] * len(others)
    assert net.outputs(X, True) is not None
    X.setflags(write=False)  # read-only rows are read as they stand
    assert net.outputs(X, True) is not None


# -- unaligned buffers are copied before they reach C ----------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_calls_refuse_unaligned_arrays(dtype, unaligned):
    """The guard at the boundary: C never receives an unaligned pointer."""
    model = random_model(rng_for("guard", dtype), (7, 5, 3), dtype)
    X = np.ones((70, 7), dtype)
    out = np.empty((70, 3), dtype)
    with pytest.raises(ValueError, match="aligned"):
        model._network.forward(unaligned(X), out, softmax=False, n_threads=1)
    with pytest.raises(ValueError, match="aligned"):
        model._network.forward(X, unaligned(out), softmax=False, n_threads=1)
    with pytest.raises(ValueError, match="aligned"):
        Trainer(model._network, unaligned(X), np.zeros(70, np.int32), batch_size=8, n_threads=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 9, 300])
def test_public_api_copies_unaligned_input(dtype, n, unaligned):
    """Unaligned X (as a Dask worker receives it) gives the bits of an aligned copy."""
    rng = rng_for("unaligned-x", dtype, n)
    model = random_model(rng, (33, 17, 4), dtype)
    X = rng.random((n, 33)).astype(dtype)
    y = rng.integers(0, 4, n)
    assert np.array_equal(model.predict_proba(unaligned(X)), model.predict_proba(X))
    assert model.score(unaligned(X), y) == model.score(X, y)
    a = model.loss_and_gradients(unaligned(X), y, sample_weight=unaligned(np.ones(n)))
    b = model.loss_and_gradients(X, y, sample_weight=np.ones(n))
    assert a[0] == b[0]
    assert all(np.array_equal(p, q) for p, q in zip(a[1] + a[2], b[1] + b[2]))
    if n > 1:  # a classifier needs two classes
        trained = [
            fastmlp.train(data, y % 2, hidden=(6,), epochs=2, batch_size=4, seed=0, dtype=dtype)
            for data in (unaligned(X), X)
        ]
        assert np.array_equal(trained[0].params_, trained[1].params_)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unaligned_parameters_are_copied(dtype, unaligned):
    model = random_model(rng_for("unaligned-p", dtype), (20, 16, 3), dtype)
    X = rng_for("x").random((80, 20)).astype(dtype)
    expected = model.predict_proba(X)
    again = MLP(model.layer_sizes, model.classes_, dtype=dtype, params=unaligned(model.params_))
    assert again.params_.flags.aligned
    assert np.array_equal(again.predict_proba(X), expected)
    # Protocol-5 pickles hand numpy out-of-band buffers as they come: here one byte off.
    buffers = []
    data = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    shifted = [memoryview(bytearray(1) + bytes(b.raw()))[1:] for b in buffers]
    back = pickle.loads(data, buffers=shifted)
    assert back.params_.flags.aligned
    assert np.array_equal(back.predict_proba(X), expected)
    back.fit_more(X, np.arange(80) % 3, epochs=1)  # trains in place on the copy


# -- Trainer ---------------------------------------------------------------------------


def test_trainer_checks_once():
    model = random_model(rng_for("checks"), (4, 3), np.float32)
    net = model._network
    X = np.zeros((10, 4), np.float32)
    y = np.zeros(10, np.int32)
    with pytest.raises(ValueError, match=r"labels must be encoded in \[0, 3\)"):
        Trainer(net, X, y + 3, batch_size=4, n_threads=1)
    with pytest.raises(ValueError, match="10 labels"):
        Trainer(net, X, y[:9], batch_size=4, n_threads=1)
    with pytest.raises(ValueError, match="does not match"):
        Trainer(net, np.zeros((10, 5), np.float32), y, batch_size=4, n_threads=1)
    with pytest.raises(ValueError, match="weight per row"):
        Trainer(net, X, y, np.ones(9, np.float32), batch_size=4, n_threads=1)
    with pytest.raises(ValueError, match="dropout"):
        Trainer(net, X, y, batch_size=4, n_threads=1, dropout=1.0)
    trainer = Trainer(net, X, y, batch_size=64, n_threads=1)
    assert trainer.batch_size == 10  # capped at the rows
    with pytest.raises(ValueError, match="optimizer first"):
        trainer.epoch(np.arange(10), 0.1, 0)
    state = {"t": 0, "state1": np.zeros_like(net.params), "state2": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="does not match the parameters"):
        trainer.set_optimizer("adam", state)
    trainer.set_optimizer("sgd", state)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\)"):
        trainer.epoch(np.array([0, 10]), 0.1, 0)
    with pytest.raises(ValueError, match="1 to 10 samples"):
        trainer.step(np.arange(11) % 10, 0.1, 0)


def dropout_network(rng, sizes, dtype):
    model = random_model(rng, sizes, dtype)
    n = 3 * 19
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    return model, X, y


def fresh_trainer(model, X, y, batch_size, optimizer="adam", eps=1e-8, **options):
    """A Trainer of `model` on X, y (int32 codes) whose optimizer starts from zero state;
    `options` are the Trainer's (n_threads, l2, dropout, ...; n_threads 1 by default)."""
    options.setdefault("n_threads", 1)
    trainer = Trainer(model._network, X, y.astype(np.int32), batch_size=batch_size, **options)
    zeros = np.zeros_like(model.params_)
    second = np.zeros_like(zeros) if optimizer != "sgd" else None
    trainer.set_optimizer(optimizer, {"t": 0, "state1": zeros, "state2": second}, eps=eps)
    return trainer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "sizes",
    # 300-450-7, 300-450-460-7: leading W beyond 512 KB, run over the batch's columns.
    [(5, 7, 4), (6, 17, 33, 5), (9, 16, 15, 31, 130, 3), (300, 450, 7), (300, 450, 460, 7)],
    ids=lambda s: "-".join(map(str, s)),
)
def test_dropout_steps_match_reference(sizes, dtype):
    """Three Adam steps with dropout and L2, the reference given the Trainer's masks.

    Fails if a mask is applied in the wrong place of the backward pass, or the weight
    gradient is taken from the activations before dropout.
    """
    rng = rng_for("dropout", sizes, dtype)
    model, X, y = dropout_network(rng, sizes, dtype)
    p, l2, B = 0.3, 0.01, 19
    ref_w = [W.astype(np.float64) for W in model.weights]
    ref_b = [b.astype(np.float64) for b in model.biases]
    acts = ["relu"] * (len(sizes) - 2) + ["identity"]
    # Adam magnifies float32 rounding of a gradient near 0 up to lr / eps times (a sign
    # flip moves a weight by lr): eps=1e-4 bounds that in float32, as in
    # test_parity_widths.three_steps.
    eps = 1e-4 if dtype == np.float32 else 1e-8
    trainer = fresh_trainer(model, X, y, B, n_threads=2, l2=l2, dropout=p, eps=eps)
    state: dict = {}
    for step in range(3):
        batch = rng.permutation(len(y))[:B]
        loss = trainer.step(batch, 0.01, 1234 + step)
        masks = trainer.dropout_masks()
        assert [m.shape for m in masks] == [(B, s) for s in sizes[1:-1]]
        for m in masks:  # inverted dropout: 0 or 1 / (1 - p), some of each
            assert set(np.unique(m)) == {0, np.float64(1 / (1 - p)).astype(dtype)}
        penalty = 0.5 * l2 * sum(float(np.sum(W**2)) for W in ref_w)
        ref_loss = R.train_step(
            ref_w,
            ref_b,
            state,
            X[batch].astype(np.float64),
            y[batch],
            acts,
            lr=0.01,
            l2=l2,
            eps=eps,
            masks=[m.astype(np.float64) for m in masks],
        )
        tol = 1e-10 if dtype == np.float64 else 2e-4
        assert loss == pytest.approx(ref_loss - penalty, rel=tol)  # step: the data loss
        scale = max(np.max(np.abs(q)) for q in ref_w + ref_b)
        for got, want in zip(model.weights + model.biases, ref_w + ref_b):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)
    assert trainer.t == 3


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_masks_do_not_depend_on_threads(dtype):
    rng = rng_for("mask-threads", dtype)
    model, X, y = dropout_network(rng, (6, 40, 20, 3), dtype)
    start = model.params_.copy()
    seen = []
    for n_threads in (1, 2):
        model.params_[...] = start
        trainer = Trainer(
            model._network, X, y.astype(np.int32), batch_size=57, n_threads=n_threads, dropout=0.5
        )
        trainer.set_optimizer("sgd", {"t": 0, "state1": np.zeros_like(start), "state2": None})
        trainer.step(np.arange(57), 0.1, 99)
        seen.append((trainer.dropout_masks(), model.params_.copy()))
    assert all(np.array_equal(a, b) for a, b in zip(seen[0][0], seen[1][0]))
    assert np.array_equal(seen[0][1], seen[1][1])


def test_continued_training_copies_unaligned_optimizer_state(unaligned):
    """Adam's moments kept from an earlier fit (or set by a user) may be unaligned."""
    rng = rng_for("unaligned-state")
    X = rng.random((64, 9)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    a = fastmlp.train(X, y, hidden=(5,), epochs=1, seed=0)
    b = fastmlp.train(X, y, hidden=(5,), epochs=1, seed=0)
    b._optimizer["state1"] = unaligned(b._optimizer["state1"])
    b._optimizer["state2"] = unaligned(b._optimizer["state2"])
    a.fit_more(X, y, epochs=1, seed=1)
    b.fit_more(X, y, epochs=1, seed=1)
    assert b._optimizer["state1"].flags.aligned
    assert np.array_equal(a.params_, b.params_)


def zero_run_data(n, features, dtype, seed):
    """Rows with runs of features zero in every row, in most rows, and scattered zeros, as
    images and one-hot columns have; labels from a rule, so training moves."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)) * (rng.random((n, features)) < 0.4)
    X[:, : features // 5] = 0  # a border: zero in every row
    X[:, features // 2 : features // 2 + 9] = 0  # a gap longer than the runs bridge
    X[rng.random(n) < 0.5, features // 3 : features // 3 + 12] = 0  # zero in half the rows
    X[:, ::17] = 0  # short gaps, bridged
    if features > 1000:  # more runs than a step takes apart (MAX_RUNS)
        X[:, np.arange(features) % 16 < 8] = 0
    y = (X[:, features // 5 :].sum(axis=1) > 0).astype(np.int64) + (X[:, -1] > 0)
    return X.astype(dtype), y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "features, batch_size, options",
    [
        (60, 32, {}),
        (60, 7, {"l2": 1e-3}),  # a partial last batch; L2 enters the gradient first
        (60, 1, {"activation": "tanh"}),  # one row a block; the activation after the runs
        (60, 40, {"normalization": "layer", "dropout": 0.2}),
        (1500, 48, {}),
    ],
)
def test_first_layer_skips_zero_features_exactly(features, batch_size, options, dtype):
    """The first layer's products run over the input features some row uses, which must
    give every bit of the whole product: -0 marks a feature used (nothing is skipped) and
    contributes +0 or -0 just as a skipped +0 would, so both trainings agree bit for bit."""
    X, y = zero_run_data(150, features, dtype, features + batch_size)
    X_all = np.where(X == 0, -0.0, X).astype(dtype)
    kw = dict(hidden=(13, 5), epochs=2, batch_size=batch_size, seed=3, dtype=dtype, n_threads=2)
    skipping = fastmlp.train(X, y, **kw, **options)
    dense = fastmlp.train(X_all, y, **kw, **options)
    assert np.array_equal(skipping.params_, dense.params_)
    assert not np.array_equal(
        skipping.params_, fastmlp.train(X, y, **{**kw, "seed": 4}, **options).params_
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_zero_blocks_and_parts_skip_everything_exactly(dtype):
    """A row block of all-zero rows (its first layer is act(b)) and a parameter part whose
    features are zero in the whole batch (a gradient of +0 only) give the whole product's
    bits: -0 in their place marks every feature used."""
    X, y = zero_run_data(96, 60, dtype, 11)
    X[:16] = 0  # with shuffle=False, the first row block of the first batch
    X[:, :30] = 0  # the first two of the 4 parameter parts of W_1 (15 features each)
    X_all = np.where(X == 0, -0.0, X).astype(dtype)
    kw = dict(hidden=(13, 5), epochs=2, batch_size=32, seed=3, dtype=dtype, shuffle=False)
    skipping = fastmlp.train(X, y, **kw)
    dense = fastmlp.train(X_all, y, **kw)
    assert np.array_equal(skipping.params_, dense.params_)
    assert np.array_equal(skipping.predict_proba(X[:16]), skipping.predict_proba(X_all[:16]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("features", [60, 1500])
def test_prediction_skips_zero_features_exactly(features, dtype):
    """Prediction's first layer, over the runs of features a block of rows uses, gives the
    bits of the whole product (-0 marks every feature used), in one block or several on
    threads; NaN in a feature no other row uses is still found."""
    X, _ = zero_run_data(700, features, dtype, features)
    model = random_model(rng_for("skip", features, dtype), (features, 13, 5), dtype, "tanh")
    X_all = np.where(X == 0, -0.0, X).astype(dtype)
    for n_threads in (1, 2):
        for rows in (slice(0, 9), slice(0, 700)):
            got = model.predict_proba(X[rows], n_threads=n_threads)
            assert np.array_equal(got, model.predict_proba(X_all[rows], n_threads=n_threads))
    X[5, 0] = np.nan  # the border: zero in every other row
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict_proba(X)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prediction_marks_features_per_group_of_rows_exactly(dtype):
    """Prediction marks the used features per group of 32 rows within a block: groups
    using few, none or all features (after which the rest of the block is one product),
    blocks that are not a multiple of 32 rows, give the whole product's bits; NaN in a
    feature only a late row uses is found."""
    rng = rng_for("groups", dtype)
    X = np.zeros((300, 60))
    X[:32, 40:] = rng.standard_normal((32, 20))  # group 0: the last 20 features
    # rows 32-63 all zero; row 64 uses every feature, rows 65-95 a few
    X[64] = rng.standard_normal(60)
    X[65:96, :5] = rng.standard_normal((31, 5))
    X[96:, 10:30] = rng.standard_normal((204, 20)) * (rng.random((204, 20)) < 0.3)
    X = X.astype(dtype)
    X_all = np.where(X == 0, -0.0, X).astype(dtype)
    model = random_model(rng_for("groups-model", dtype), (60, 13, 5), dtype, "relu")
    net = model._network
    for block in (256, 100, 45):
        for n_threads in (1, 2):
            got, want = (np.empty((300, 5), dtype) for _ in range(2))
            net.forward(X, got, softmax=True, n_threads=n_threads, max_block_rows=block)
            net.forward(X_all, want, softmax=True, n_threads=n_threads, max_block_rows=block)
            assert np.array_equal(got, want), (block, n_threads)
    assert np.array_equal(model.predict_proba(X), model.predict_proba(X_all))
    X[290, 0] = np.inf  # feature 0: zero in every row of its group but this one
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict_proba(X)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["first layer", "hidden layer", "output bias"])
def test_weights_that_overflow_are_an_error_not_nan(dtype, where):
    """Finite inputs whose sums overflow the dtype (weights near its limit, as a diverged
    or damaged model has) raise an error naming the model, on every path: one row, a
    request, parallel blocks, a sparse X; NaN in X is still named as X's."""
    big = np.finfo(dtype).max
    sizes = (4, 6, 5, 3)
    weights = [np.full((a, b), 0.5, dtype) for a, b in zip(sizes, sizes[1:])]
    biases = [np.zeros(b, dtype) for b in sizes[1:]]
    if where == "first layer":
        weights[0][:] = big / 4  # 4 inputs >= 1: the sums pass the limit
    elif where == "hidden layer":
        weights[1][:] = big / 4
    else:
        weights[2][:] = big / 1e6  # finite sums, far above the limit's spacing
        biases[2][:] = big
    model = MLP.from_weights(weights, biases, dtype=dtype)
    X = (1 + rng_for("overflow", dtype).random((600, 4))).astype(dtype)
    for rows in (1, 5, 600):
        for n_threads in (1, 2):
            with pytest.raises(ValueError, match=r"sums overflow .* which are finite \("):
                model.predict_proba(X[:rows], n_threads=n_threads)
    with pytest.raises(ValueError, match=r"sums overflow"):
        model.predict(sparse.csr_matrix(X))
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity"):
        model.predict(X)


def test_nan_written_into_the_weights_is_named():
    model = random_model(rng_for("nan w"), (5, 4, 3), np.float32)
    model.weights[1][2, 1] = np.nan
    with pytest.raises(ValueError, match=r"parameters contain NaN or infinity; was one"):
        model.predict(np.ones((3, 5), np.float32))


def test_finite_inputs_that_overflow_the_first_layer_are_named():
    weights = [np.full((5, 4), 0.5, np.float32), np.full((4, 3), 0.5, np.float32)]
    model = MLP.from_weights(weights, [np.zeros(4, np.float32), np.zeros(3, np.float32)])
    X = np.full((3, 5), 3e38, np.float32)
    with pytest.raises(ValueError, match=r"which are finite \(largest \|x\|: 3e\+38, "):
        model.predict(X)


def test_compiled_entry_points_refuse_what_does_not_fit():
    """Error paths of the compiled calls that the public API never reaches."""
    model = random_model(rng_for("misfit"), (4, 6, 3), np.float64)
    net = model._network
    X = np.zeros((10, 4))
    with pytest.raises(ValueError, match="does not match the network"):
        net.forward(np.zeros((10, 5)), np.empty((10, 3)), softmax=False, n_threads=1)
    with pytest.raises(ValueError, match="does not match the network"):
        net.forward(X, np.empty((10, 2)), softmax=False, n_threads=1)
    y = np.zeros(10, np.int32)
    with pytest.raises(ValueError, match="at least 1"):
        Trainer(net, X, y, batch_size=0, n_threads=1)
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        Trainer(net, X, y, batch_size=4, n_threads=1, l2=-1.0)
    with pytest.raises(ValueError, match="one batch"):
        Trainer(net, X, y, batch_size=4, n_threads=1).gradient()
    with pytest.raises(ValueError, match="without dropout"):
        Trainer(net, X, y, batch_size=10, n_threads=1, dropout=0.5).gradient()
    trainer = Trainer(net, X, y, batch_size=4, n_threads=1)
    state = {"t": 0, "state1": np.zeros_like(net.params), "state2": np.zeros_like(net.params)}
    with pytest.raises(ValueError, match="optimizer must be one of"):
        trainer.set_optimizer("rmsprop", state)
    with pytest.raises(ValueError, match="step count"):
        trainer.set_optimizer("adam", {**state, "t": -1})
