"""The pipelines package's shared parts: the rules that pick a pipeline, the settings resolved once, the checkpoint
tag checked on restore, the one alias table and the one epoch/chunk plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import compose_cfg

import sgns.train
from sgns.config import Config, ModelConfig, OptimizerConfig, TrainerConfig, typed_config
from sgns.errors import SGNSError
from sgns.model import SGNS, FullSoftmax
from sgns.pipelines import choose_pipeline, make_optimizer, resolve
from sgns.pipelines.base import PipelineBase, checkpoint_pipeline
from sgns.pipelines.device import (
    CPU_BATCH_SIZE,
    DEVICE_BATCH_SIZE,
    DEVICE_LR_SCALE,
    DEVICE_ROW_CAP,
    device_step_defaults,
)
from sgns.pipelines.negatives import alias_table
from sgns.pipelines.plan import ChunkPlan

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _cfg(kernel: str = "auto", optimizer: str = "sgd", model: str = "sgns", torch_step: str = "eager") -> Config:
    return Config(trainer=TrainerConfig(kernel=kernel, torch_step=torch_step),
                  optimizer=OptimizerConfig(name=optimizer), model=ModelConfig(name=model))


@pytest.mark.parametrize("kernel,optimizer,model,device,expected", [
    ("auto", "sgd", "sgns", CPU, "span"),
    ("numba", "sgd", "sgns", CPU, "span"),
    ("auto", "sgd", "sgns", CUDA, "device"),
    ("torch", "sgd", "sgns", CPU, "device"),
    ("torch", "sparse_adam", "sgns", CPU, "device"),
    ("auto", "sparse_adam", "sgns", CUDA, "device"),
    ("auto", "sparse_adam", "sgns", CPU, "pairs"),
    ("auto", "sgd", "full_softmax", CPU, "softmax"),
    ("torch", "sgd", "full_softmax", CUDA, "softmax"),
    ("auto", "sgd", "subword", CPU, "span"),  # the numba kernel's train_piece_subword
    ("numba", "sgd", "subword", CPU, "span"),
    ("torch", "sgd", "subword", CPU, "device"),
    ("auto", "sgd", "subword", CUDA, "device"),
])
def test_choose_pipeline_holds_every_rule(kernel, optimizer, model, device, expected):
    assert choose_pipeline(_cfg(kernel, optimizer, model), device) == expected


@pytest.mark.parametrize("kernel,optimizer,model,device,words", [
    ("numba", "sgd", "sgns", CUDA, "CPU only"),
    ("numba", "sparse_adam", "sgns", CPU, "plain SGD"),
    ("numba", "sgd", "full_softmax", CPU, "full_softmax"),
    ("auto", "sparse_adam", "full_softmax", CPU, "full_softmax"),
    ("numba", "sgd", "subword", CUDA, "CPU only"),
    ("auto", "sparse_adam", "subword", CPU, "model=subword .* use optimizer=sgd"),
    ("torch", "sparse_adam", "subword", CUDA, "model=subword .* use optimizer=sgd"),
])
def test_choose_pipeline_refuses_what_no_pipeline_runs_in_one_line(kernel, optimizer, model, device, words):
    with pytest.raises(SGNSError, match=words) as error:
        choose_pipeline(_cfg(kernel, optimizer, model), device)
    assert "\n" not in str(error.value)


def test_choose_pipeline_also_holds_the_torch_step_and_torchrun_rules():
    """Every compatibility rule is in the one function: a compiled torch step is the sgd step, and a torchrun merge
    combines no optimizer state."""
    with pytest.raises(SGNSError, match="trainer.torch_step=static is the sgd step"):
        choose_pipeline(_cfg("torch", "sparse_adam", torch_step="static"), CPU)
    assert choose_pipeline(_cfg("auto", "sparse_adam", torch_step="static"), CPU) == "pairs"  # no torch step there
    assert choose_pipeline(_cfg("torch", torch_step="static"), CPU, world_size=2) == "device"
    with pytest.raises(SGNSError, match="torchrun runs train with optimizer.name=sgd only"):
        choose_pipeline(_cfg("torch", "sparse_adam"), CPU, world_size=2)
    with pytest.raises(SGNSError, match="trainer.torch_step=compiled is SGNS's fixed-shape step"):
        choose_pipeline(_cfg("auto", model="subword", torch_step="compiled"), CUDA)
    assert choose_pipeline(_cfg("auto", model="subword"), CPU, world_size=2) == "span"


@pytest.mark.parametrize("mode", ["cuda_graph", "compiled_cuda_graph"])
def test_choose_pipeline_refuses_a_cuda_graph_step_off_cuda(mode: str) -> None:
    """The CUDA-graph steps' rule is the factory's too: refused when the pipeline is chosen (before resolved.yaml
    is written), not when the step is built."""
    with pytest.raises(SGNSError, match=f"trainer.torch_step={mode} needs a CUDA device"):
        choose_pipeline(_cfg("torch", torch_step=mode), CPU)
    assert choose_pipeline(_cfg("torch", torch_step=mode), CUDA) == "device"
    assert choose_pipeline(_cfg("auto", torch_step=mode), CPU) == "span"  # no torch step on the span pipeline


def test_the_optimizer_is_built_in_one_place_and_the_model_knows_its_untrained_loss():
    assert make_optimizer(OptimizerConfig(), SGNS(10, 4)) is None  # sgd: the pipelines' own steps
    adam = make_optimizer(OptimizerConfig(name="sparse_adam", lr=0.002), SGNS(10, 4))
    assert isinstance(adam, torch.optim.SparseAdam) and adam.param_groups[0]["lr"] == 0.002
    assert SGNS(10, 4).untrained_loss(5) == 6 * np.log(2)
    assert FullSoftmax(1000, 4).untrained_loss(5) == np.log(1000)


def test_device_step_defaults_fill_in_only_what_is_null():
    big = 10**8  # a corpus big enough for the largest default batch
    assert device_step_defaults(big, 5, None, None, None) == (DEVICE_BATCH_SIZE, DEVICE_ROW_CAP, DEVICE_LR_SCALE)
    assert device_step_defaults(big, 5, CPU_BATCH_SIZE, None, None) == (CPU_BATCH_SIZE, 0.0, 1.0)  # the exact step
    assert device_step_defaults(big, 5, None, 8.0, 1.5) == (DEVICE_BATCH_SIZE, 8.0, 1.5)
    assert device_step_defaults(big, 5, 100_000, 0.0, None) == (100_000, 0.0, DEVICE_LR_SCALE)
    assert device_step_defaults(10**6, 5, None, None, None) == (CPU_BATCH_SIZE, 0.0, 1.0)  # a small corpus


def test_resolve_turns_every_auto_into_a_value(tmp_path: Path):
    def resolved(*overrides):  # on a corpus big enough for the device pipeline's largest default batch
        return resolve(typed_config(compose_cfg(tmp_path, list(overrides))), CPU, 10**8)

    def values(r):
        c = r.config
        return r.pipeline, c.trainer.device, c.data.batch_size, c.optimizer.row_cap, c.optimizer.lr_scale

    span = resolved()
    assert values(span) == ("span", "cpu", None, None, None)
    assert span.config.trainer.threads >= 1 and resolved("trainer.threads=3").config.trainer.threads == 3
    device = resolved("trainer.kernel=torch")
    assert values(device)[2:] == (DEVICE_BATCH_SIZE, DEVICE_ROW_CAP, DEVICE_LR_SCALE)
    adam = resolved("trainer.kernel=torch", "optimizer=sparse_adam")
    assert values(adam)[3:] == (0.0, 1.0)  # the autograd step neither caps nor scales
    assert resolved("optimizer=sparse_adam").config.data.batch_size == CPU_BATCH_SIZE
    assert resolved("model=full_softmax", "data.batch_size=128").config.data.batch_size == 128
    record = {"trainer": {"kernel": "torch", "device": "auto", "threads": 0}, "data": {"batch_size": None},
              "optimizer": {"row_cap": None, "lr_scale": None}}
    asked = resolved("trainer.kernel=torch").with_asked(record)
    assert asked["asked"]["data.batch_size"] is None and asked["resolved"]["data.batch_size"] == DEVICE_BATCH_SIZE
    assert asked["asked"]["trainer.kernel"] == "torch" and asked["resolved"]["trainer.kernel"] == "device"


def test_a_run_writes_what_it_resolved_next_to_what_was_asked(tmp_path: Path):
    run = tmp_path / "run"
    sgns.train.train(compose_cfg(run, ["corpus.synthetic.sentences=2000", "trainer.epochs=1", "model.dim=8",
                                       "trainer.kernel=torch", "data.batch_size=512", "eval.every_words=0"]))
    written = yaml.safe_load((run / "resolved.yaml").read_text())
    assert written["asked"]["optimizer.row_cap"] is None and written["resolved"]["optimizer.row_cap"] == 0.0
    assert written["resolved"]["data.batch_size"] == 512 and written["resolved"]["trainer.kernel"] == "device"


class _Tagged(PipelineBase):
    def __init__(self, name: str):
        self.name = name  # type: ignore[misc]
        self.loaded = None

    def own_state(self) -> dict:
        return {"own": self.name}

    def load_own_state(self, state: dict) -> None:
        self.loaded = state["own"]


def test_the_tag_is_written_and_checked_on_restore():
    span, device = _Tagged("span"), _Tagged("device")
    state = span.state_dict()
    assert state["pipeline"] == "span" and checkpoint_pipeline(state) == "span"
    _Tagged("span").load_state_dict(state)
    with pytest.raises(SGNSError, match=r"written by the numba kernel over token spans .*resume it with those"):
        device.load_state_dict(state)
    assert device.loaded is None  # refused before anything was restored


def test_checkpoints_from_before_the_tag_name_their_pipeline():
    assert checkpoint_pipeline({"spans": {}, "optimizer": None}) == "span"
    assert checkpoint_pipeline({"pair_source": "device", "optimizer": None}) == "device"
    assert checkpoint_pipeline({"sampler": {}, "optimizer": None}) == "pairs"
    assert checkpoint_pipeline({}) == "softmax"


def test_frozen_rows_travel_with_the_state():
    weight = torch.arange(12, dtype=torch.float32).view(6, 2).clone()
    source = _Tagged("pairs")
    source.freeze(weight, np.array([1, 4]))
    state = source.state_dict()
    assert state["frozen_rows"].tolist() == [1, 4]
    resumed = _Tagged("pairs")
    resumed.freeze(weight, None)  # on resume the rows come with the checkpoint
    resumed.load_state_dict(state)
    assert resumed.frozen.rows.tolist() == [1, 4]
    with pytest.raises(SGNSError, match="no frozen rows"):
        resumed.load_state_dict(_Tagged("pairs").state_dict())


@pytest.mark.parametrize("probs", [np.full(7, 1 / 7), np.array([0.5, 0.25, 0.125, 0.125]), np.array([1.0, 0.0, 0.0]),
                                   (lambda p: p / p.sum())(1.0 / np.arange(1, 2001) ** 0.75)])
def test_the_alias_table_holds_exactly_the_distribution(probs):
    accept, alias = alias_table(probs)
    n = len(probs)
    assert ((0 <= accept) & (accept <= 1)).all() and ((0 <= alias) & (alias < n)).all()
    mass = accept.copy()  # slot i keeps accept[i] / n for itself, gives the rest to alias[i]
    np.add.at(mass, alias, 1.0 - accept)
    assert np.allclose(mass / n, probs, atol=1e-12)


def test_the_chunk_plan_walks_every_epoch_from_any_position():
    plan = ChunkPlan(total_tokens=2500, chunk_tokens=1000, epochs=2)
    assert [plan.bounds(c) for c in range(plan.n_chunks)] == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert list(plan.chunks((0, 0, 0))) == [(e, c, c, 0) for e in range(2) for c in range(3)]
    assert list(plan.chunks((0, 2, 5))) == [(0, 2, 2, 5), (1, 0, 0, 0), (1, 1, 1, 0), (1, 2, 2, 0)]  # inside chunk 2
    assert list(plan.chunks((0, 3, 0))) == [(1, c, c, 0) for c in range(3)]  # past the last chunk: the epoch's end
    assert plan.words_done(1, 2, 1, 2) == 2500 + 2000 + 250 and plan.total_words() == 5000


def test_a_shuffled_chunk_plan_covers_each_epoch_once_with_its_words_counted_in_training_order():
    plan = ChunkPlan(total_tokens=9500, chunk_tokens=1000, epochs=3, order="shuffled", seed=7)
    walks = []
    for epoch in range(3):
        walk = [(slot, chunk) for e, slot, chunk, _ in plan.chunks((epoch, 0, 0)) if e == epoch]
        assert [slot for slot, _ in walk] == list(range(10))  # positions count places in the training order
        assert sorted(chunk for _, chunk in walk) == list(range(10))  # each chunk once
        walks.append([chunk for _, chunk in walk])
        done = 0  # words_done counts the chunks trained so far in this epoch's order, the short one where it falls
        for slot, chunk in walk:
            lo, hi = plan.bounds(chunk)
            assert plan.words_done(epoch, slot, 0, 4) == epoch * 9500 + done
            assert plan.words_done(epoch, slot, 1, 4) == epoch * 9500 + done + (hi - lo) / 4
            done += hi - lo
        assert plan.words_done(epoch, 9, 4, 4) == (epoch + 1) * 9500
    assert walks[0] != walks[1] != walks[2] and walks[0] != sorted(walks[0])  # a new order each epoch, not sorted
    again = ChunkPlan(total_tokens=9500, chunk_tokens=1000, epochs=3, order="shuffled", seed=7)
    resumed = list(again.chunks((1, 4, 2)))  # inside the epoch's fifth chunk: a function of (seed, epoch)
    assert [chunk for _, _, chunk, _ in resumed[:6]] == walks[1][4:]
    assert resumed[0][3] == 2 and all(first == 0 for *_, first in resumed[1:]) and len(resumed) == 6 + 10
    other = ChunkPlan(total_tokens=9500, chunk_tokens=1000, epochs=3, order="shuffled", seed=8)
    assert [chunk for _, _, chunk, _ in other.chunks((0, 0, 0))][:10] != walks[0]


def test_interleaved_stretches_advance_sentence_by_sentence_token_for_token():
    from sgns.pipelines.plan import interleave_sentences

    a = (np.arange(0, 100, dtype=np.int32), np.array([0, 10, 50, 60, 100]))  # sentences of 10, 40, 10, 40
    b = (np.arange(100, 150, dtype=np.int32), np.array([0, 5, 25, 30, 50]))  # 5, 20, 5, 20: the same shares
    ids, starts = interleave_sentences([a, b])
    sentences = [ids[x:y].tolist() for x, y in zip(starts, starts[1:], strict=False)]
    # each sentence placed by the share of its stretch before it, ties to the earlier stretch
    assert sentences == [list(range(0, 10)), list(range(100, 105)), list(range(10, 50)), list(range(105, 125)),
                         list(range(50, 60)), list(range(125, 130)), list(range(60, 100)), list(range(130, 150))]
    assert starts[0] == 0 and starts[-1] == 150 and ids.dtype == np.int32
    c = (np.arange(150, 160, dtype=np.int32), np.array([0, 10]))  # one sentence: first (share 0), then no more
    ids, starts = interleave_sentences([a, b, c])
    assert ids[10:15].tolist() == list(range(100, 105)) and ids[15:25].tolist() == list(range(150, 160))
    assert sorted(ids.tolist()) == list(range(160)) and starts[-1] == 160
    empty = (np.zeros(0, dtype=np.int32), np.array([0, 0]))
    assert interleave_sentences([a, empty])[1].tolist() == a[1].tolist()  # an empty stretch adds nothing
    assert interleave_sentences([a])[0] is a[0]


@pytest.mark.parametrize("shards", [0, 2])
def test_a_plan_of_streams_trains_every_part_side_by_side_each_position_once(shards: int):
    from sgns.distributed import plan_shard

    total, streams = 9_999, 3
    if shards:
        plans = [ChunkPlan(total, 1000, 2, plan_shard(total, 1000, 10**9, r, shards, streams=streams)) for r in
                 range(shards)]
    else:
        plans = [ChunkPlan(total, 1000, 2, streams=streams)]
    n = plans[0].n_chunks if not shards else plans[0].shard.n_chunks
    assert all(p.streams == streams for p in plans)  # a shard's streams are the plan's
    walked = [(p, chunk) for p in plans for epoch, _, chunk, _ in p.chunks((0, 0, 0)) if epoch == 0]
    assert sorted(chunk for _, chunk in walked) == list(range(n))
    covered = sorted(r for p, chunk in walked for r in p.stretches(chunk))
    assert len(covered) == n * streams and covered[0][0] == 0 and covered[-1][1] == total
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:], strict=False))  # contiguous, no overlap
    parts = [k * total // streams for k in range(streams)]
    for p, chunk in walked:  # chunk c: the c-th stretch of every part
        assert [lo for lo, _ in p.stretches(chunk)] == [a + (b - a) * chunk // n for a, b in
                                                        zip(parts, [*parts[1:], total], strict=True)]
        halves = [p.stretches(chunk, i, 2) for i in range(2)]  # a chunk's parts: each stretch's parts
        assert [(x[0], y[1]) for x, y in zip(*halves, strict=True)] == p.stretches(chunk)
    assert sum(p.chunk_words(c) for p, c in walked) == total
    if shards:
        assert sum(p.shard.words_per_epoch() for p in plans) == total
    else:
        done = [plans[0].words_done(e, slot, 1, 1) for e, slot, _, _ in plans[0].chunks((0, 0, 0))]
        assert done[plans[0].n_chunks - 1] == total and done[-1] == 2 * total


def test_a_shuffled_shard_walks_the_same_rounds_on_every_rank():
    from sgns.distributed import plan_shard

    plans = [ChunkPlan(10_000, 1000, 1, plan_shard(10_000, 1000, 10**9, r, 2), "shuffled", 3) for r in range(2)]
    walks = [list(p.chunks((0, 0, 0))) for p in plans]
    assert [c for *_, c, _ in walks[0]] == [c - 1 for *_, c, _ in walks[1]] != list(range(0, 10, 2))  # same rounds
    assert [s for _, s, _, _ in walks[1]] == list(range(1, 10, 2))  # slots: rank + W x place
    assert sorted(c for w in walks for *_, c, _ in w) == list(range(10))
    # both ranks count the words of the rounds done so far, all ranks together
    assert [p.words_done(0, s, 1, 1) for p, w in zip(plans, walks, strict=True) for _, s, _, _ in w[:1]] == [2000, 2000]
    assert list(plans[1].chunks((0, 3, 7)))[0] == (0, 3, walks[1][1][2], 7)  # a rank resumes at its second place

