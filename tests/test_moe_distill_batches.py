"""The MoE stages' distillation loop: length-grouped batches and the teacher outputs computed once."""

from __future__ import annotations

import numpy as np
import torch

from effdl.compress.moe import _epoch_batches, _lengths, _teacher_outputs, _trim_padding
from effdl.tasks.base import Split


def _padded(lengths: list[int], seq: int = 16) -> Split:
    mask = np.zeros((len(lengths), seq), dtype=np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = np.where(mask > 0, np.arange(1, len(lengths) + 1)[:, None] % 50 + 1, 0).astype(np.int64)
    return Split({"input_ids": ids, "attention_mask": mask})


def test_length_grouped_batches_cover_every_sample_once_and_cut_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 17, size=403).tolist()
    data = _padded(lengths)
    lens = _lengths(data, ("input_ids", "attention_mask"))
    assert lens is not None and lens.tolist() == lengths
    batches = _epoch_batches(rng.permutation(len(data)), lens, 8, rng)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(data)))  # each sample exactly once
    assert max(len(b) for b in batches) == 8
    grouped = sum(int(lens[b].max()) * len(b) for b in batches)
    plain = sum(int(lens[b].max()) * len(b) for b in _epoch_batches(rng.permutation(len(data)), None, 8, rng))
    assert grouped < 0.75 * plain  # padded positions a step pays for, grouped vs random batches
    # no attention_mask (fixed-size inputs): plain consecutive batches of the given order
    order = np.arange(10)
    assert [b.tolist() for b in _epoch_batches(order, None, 4, rng)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


class _MeanEmbed(torch.nn.Module):
    """A masked-mean embedding model: its output per sample does not depend on trailing padding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(64, 6)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()
        return (self.emb(ids) * m).sum(1) / m.sum(1).clamp_min(1)


def test_teacher_outputs_once_match_per_batch_outputs() -> None:
    names = ("input_ids", "attention_mask")
    data = _padded([3, 16, 1, 9, 9, 4, 12, 2] * 20)
    teacher = _MeanEmbed().eval()
    lens = _lengths(data, names)

    def batch_args(idx: np.ndarray) -> list[torch.Tensor]:
        return _trim_padding([torch.from_numpy(data.inputs[n][idx]) for n in names], names)

    cached = _teacher_outputs(teacher, data, batch_args, lens)
    assert cached is not None and cached.shape == (len(data), 6)
    idx = np.array([5, 0, 77, 160 - 1])
    with torch.no_grad():
        direct = teacher(*batch_args(idx))
    torch.testing.assert_close(cached[torch.from_numpy(idx)], direct)

    class PerToken(_MeanEmbed):
        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.emb(ids) * mask.unsqueeze(-1)

    assert _teacher_outputs(PerToken().eval(), data, batch_args, lens) is None  # length follows the trimming


def test_distill_without_dropout_trains_the_student_in_eval_mode() -> None:
    from effdl.compress.moe import DistillConfig, distill
    from effdl.tasks import get_task
    from effdl.zoo.transformer import EncoderClassifier

    task = get_task("seq_majority", n_train=64, length=16)
    cfg = {"vocab_size": 16, "dim": 16, "depth": 1, "heads": 2, "num_classes": 4, "max_len": 16}
    teacher = EncoderClassifier(**cfg).eval()
    for dropout in (True, False):
        student = EncoderClassifier(**cfg, dropout=0.5)
        student.load_state_dict(teacher.state_dict())
        modes: list[bool] = []
        for m in student.modules():
            if isinstance(m, torch.nn.Dropout):
                m.register_forward_pre_hook(lambda mod, _a, modes=modes: modes.append(mod.training))
        before = [p.detach().clone() for p in student.parameters()]
        distill(student, teacher, task, DistillConfig(epochs=1, batch_size=32, dropout=dropout))
        assert modes and set(modes) == {dropout}
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))  # it trained
        assert not student.training  # handed back in eval mode either way
