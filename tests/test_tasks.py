"""Built-in tasks: deterministic, disjoint splits; metrics that score perfect outputs as perfect; agreements."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest
import torch

from effdl.errors import InputError, UnknownNameError
from effdl.tasks import SPLITS, TASKS, get_task
from effdl.tasks.text import CHAR_VOCAB, decode_chars, encode_chars, stdlib_docstring_corpus

NEW_TASKS = ["shapes", "stdlib_text", "seq_majority", "seq_reverse", "digits_recon", "digits_gen", "sbm_nodes"]


@functools.cache
def _task(name: str, seed: int = 0):
    return get_task(name, seed=seed)


def _row_digests(split, with_targets: bool = False) -> set[bytes]:
    n = len(split)
    arrays = [split.inputs[k] for k in sorted(split.inputs)]
    if with_targets and split.targets is not None:
        arrays.append(split.targets)
    return {hashlib.sha1(b"".join(a[i].tobytes() for a in arrays)).digest() for i in range(n)}


def test_all_builtin_tasks_registered() -> None:
    assert set(NEW_TASKS) | {"digits"} <= set(TASKS.names())
    with pytest.raises(UnknownNameError, match="shapes"):
        get_task("no_such_task")


@pytest.mark.parametrize("name", NEW_TASKS)
def test_splits_deterministic_disjoint_and_well_typed(name: str) -> None:
    task = _task(name)
    again = get_task(name, seed=0)
    for s in SPLITS:
        a, b = task.split(s), again.split(s)
        assert len(a) > 0
        assert list(a.inputs) == list(task.input_names)
        for k in task.input_names:
            np.testing.assert_array_equal(a.inputs[k], b.inputs[k])
            assert a.inputs[k].dtype in (np.float32, np.int64), (k, a.inputs[k].dtype)
            assert len(a.inputs[k]) == len(a)
        assert a.targets is not None and len(a.targets) == len(a)
        np.testing.assert_array_equal(a.targets, b.targets)
    digests = {s: _row_digests(task.split(s)) for s in SPLITS}
    assert not digests["train"] & digests["heldout"]
    assert not digests["train"] & digests["calibration"]
    assert not digests["calibration"] & digests["heldout"]
    if name == "digits_gen":  # the real images behind the metric are disjoint too
        real = {s: {hashlib.sha1(t.tobytes()).digest() for t in task.split(s).targets} for s in SPLITS}
        assert not real["train"] & real["heldout"]
    other = get_task(name, seed=1).split("heldout")
    first_input = task.input_names[0]
    assert not np.array_equal(other.inputs[first_input], task.split("heldout").inputs[first_input])


def _perfect_outputs(name: str, task, split) -> list[np.ndarray]:
    t = split.targets
    if name in ("digits_recon", "digits_gen"):
        return [t]
    classes = {"stdlib_text": len(CHAR_VOCAB), "seq_reverse": 16}.get(name, int(t.max()) + 1)
    return [np.eye(classes, dtype=np.float32)[t] * 50.0]


@pytest.mark.parametrize("name", NEW_TASKS)
def test_metric_scores_perfect_outputs_best_and_agreement_is_exact(name: str) -> None:
    task = _task(name)
    held = task.split("heldout")
    perfect = _perfect_outputs(name, task, held)
    value = task.score(perfect, held.targets)
    if name == "stdlib_text":
        assert value == pytest.approx(1.0, abs=1e-6)
    elif name == "digits_recon":
        assert value == 0.0
    elif name == "digits_gen":
        assert abs(value) < 1e-6  # same images: zero distance (up to sqrtm round-off)
    else:
        assert value == 100.0
    agreement = task.agreement(perfect, [p.copy() for p in perfect])
    assert agreement
    for key, v in agreement.items():
        if key.endswith("agreement"):
            assert v == 100.0
        elif key in ("relative_error_pct", "max_abs_error"):
            assert v == 0.0


def test_metrics_rank_worse_outputs_worse() -> None:
    text = _task("stdlib_text")
    held = text.split("heldout")
    uniform = np.zeros((len(held), held.targets.shape[1], len(CHAR_VOCAB)), np.float32)
    assert text.score([uniform], held.targets) == pytest.approx(len(CHAR_VOCAB), rel=1e-6)
    gen = _task("digits_gen")
    real = gen.split("heldout").targets
    noise = np.random.default_rng(0).uniform(-1, 1, real.shape).astype(np.float32)
    near = gen.score([gen.split("train").targets[: len(real)]], real)
    far = gen.score([noise], real)
    assert near < 0.2 * far
    recon = _task("digits_recon")
    agreement = recon.agreement([recon.split("heldout").targets], [recon.split("heldout").targets + 0.01])
    assert agreement["max_abs_error"] == pytest.approx(0.01, abs=1e-6)
    assert 0 < agreement["relative_error_pct"] < 10


def test_losses_accept_model_output_shapes() -> None:
    for name in ("stdlib_text", "seq_reverse", "sbm_nodes"):
        task = _task(name)
        split = task.split("calibration").take(4)
        classes = {"stdlib_text": len(CHAR_VOCAB), "seq_reverse": 16, "sbm_nodes": 4}[name]
        logits = torch.zeros((*split.targets.shape, classes), requires_grad=True)
        loss = task.loss(logits, torch.from_numpy(split.targets))
        assert loss.item() == pytest.approx(np.log(classes), rel=1e-5)
    recon = _task("digits_recon")
    x = torch.from_numpy(recon.split("calibration").targets[:4])
    assert recon.loss(x, x).item() == 0.0
    with pytest.raises(InputError, match="adversarially"):
        _task("digits_gen").loss(x, x)


def test_stdlib_corpus_and_char_codec(tmp_path) -> None:
    text = stdlib_docstring_corpus()
    assert len(text) > 100_000
    sample = "Return the value.\n\tTab é"
    assert decode_chars(encode_chars(sample)) == "Return the value.\n?Tab ?"
    ids = encode_chars(text[:10_000])
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < len(CHAR_VOCAB)
    with pytest.raises(InputError, match="docstring characters"):
        stdlib_docstring_corpus(tmp_path)


def test_seq_majority_labels_are_the_most_frequent_marker() -> None:
    split = _task("seq_majority").split("calibration")
    counts = np.stack([(split.inputs["tokens"] == m).sum(1) for m in range(1, 5)], 1)
    np.testing.assert_array_equal(counts.argmax(1), split.targets)
    top = np.sort(counts, 1)
    assert (top[:, -1] > top[:, -2]).all()


def test_seq_reverse_targets_and_teacher_forcing() -> None:
    task = _task("seq_reverse")
    split = task.split("calibration")
    np.testing.assert_array_equal(split.targets, split.inputs["src"][:, ::-1])
    np.testing.assert_array_equal(split.inputs["tgt_in"][:, 1:], split.targets[:, :-1])
    assert (split.inputs["tgt_in"][:, 0] == task.bos).all()


def test_shapes_and_sbm_options() -> None:
    small = get_task("shapes", size=16, n_train=50)
    assert small.split("train").inputs["image"].shape == (50, 3, 16, 16)
    graphs = get_task("sbm_nodes", nodes=12, n_train=10).split("train")
    adj = graphs.inputs["adj"]
    assert adj.shape == (10, 12, 12)
    np.testing.assert_array_equal(adj, adj.transpose(0, 2, 1))
    assert (np.diagonal(adj, axis1=1, axis2=2) == 0).all()
