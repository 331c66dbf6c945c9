"""The training loop, read top to bottom: setup, the loop, finish.

corpus -> vocabulary -> model + pipeline (batches and the step) -> the loop over batches
-> checkpoints, TensorBoard points, vectors, evaluation, metrics.json. `train(cfg)` is a plain function
returning the run's metrics; the command line around it is sgns.cli.train.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from sgns.config import (
    USUAL_LR,
    Config,
    DistConfig,
    OptimizerConfig,
    as_record,
    check_resolvable,
    to_yaml,
    typed_config,
    validate,
)
from sgns.corpus import (
    EncodedCorpus,
    check_corpus_path,
    encode,
    make_source,
    map_counts,
    release_pages,
    return_freed_memory,
)
from sgns.corpus.phrases import apply_phrases
from sgns.corpus.synthetic import evaluation_config
from sgns.distributed.team import Team, join_team
from sgns.errors import SGNSError, Stopped
from sgns.evaluate import EvalSuite
from sgns.model import SGNS, SubwordSGNS, make_model
from sgns.pipelines import Pipeline, learning_rate, make_pipeline, resolve
from sgns.train.checkpoint import list_checkpoints
from sgns.train.checkpoint_cadence import CheckpointCadence
from sgns.train.eval_schedule import EvalSchedule, one_cpu_thread
from sgns.train.init_from import start_from
from sgns.train.metrics import objective
from sgns.train.rundir import RunDir, open_run_dir
from sgns.train.signals import StopRequest, sigterm_interrupts
from sgns.train.state import PIPELINE_STATE_KEY, TrainState, seed_everything
from sgns.train.tblog import TBLog
from sgns.vocab import TIES, Vocabulary, checkpoint_words, tie_rule

log = logging.getLogger("sgns")


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Train word vectors as `cfg` says; write everything into cfg.trainer.run_dir; return the metrics.

    Holds a lock on the run dir while it trains; SIGINT/SIGTERM outside the training loop (reading the corpus,
    writing outputs) become an SGNSError, inside it they stop after the current step with a checkpoint.

    The config stops here: checked, then turned once into the schema's objects (what every stage below reads)
    and into plain data, its record (what checkpoints keep, HParams show and a resumed run is compared with).
    """
    validate(cfg)
    check_resolvable(cfg)
    check_corpus_path(cfg.corpus)  # a FIFO or a device: refused before the run dir is opened
    config, record = typed_config(cfg), as_record(cfg)
    team = join_team(config.trainer.device, config.dist)  # a team of one unless torchrun started others too
    run = open_run_dir(config.trainer.run_dir, writer=team.is_main)  # under torchrun rank 0 alone writes files
    try:
        with run.locked(), sigterm_interrupts():
            return _train(config, record, run, team)
    except KeyboardInterrupt:
        run_dir = config.trainer.run_dir
        raise Stopped("interrupted outside the training loop", run_dir,
                      f"nothing is lost: run the same command again to continue (hydra.run.dir={run_dir})") from None


def _train(config: Config, record: Dict[str, Any], run: RunDir, team: Team) -> Dict[str, Any]:
    # ------------------------------------------------------------------------------------------- setup
    started = time.perf_counter()
    t = config.trainer
    if t.threads:
        torch.set_num_threads(t.threads)
    device = team.device
    seed_everything(t.seed)
    resume, rank_state = team.share_resume(run.find_resume(record))
    if resume is not None and resume["progress"].get("finished"):
        return run.finished_metrics(resume)

    # A resumed run keeps the tie order its checkpoint was written with (older runs: alphabetical), so it resumes
    # exactly; every torchrun rank learns that rule with rank 0's resume decision.
    ties = tie_rule(resume.get("vocab", {}) if resume is not None else None)
    corpus, vocab = team.first_then_others(lambda: read_corpus(config, ties), "reading the corpus")
    run.write_vocab(vocab)
    # Before the model: its word indexes (uppercased words, up to 300k) are built and freed below the tables
    m = config.model  # model=subword: benchmark words outside the vocabulary are answered from n-grams
    suite = EvalSuite(run.benchmarks(evaluation_config(config.eval, config.corpus, config.data.cache_dir)),
                      vocab.words, config.corpus.kind, log=log.info,
                      ngrams=(m.minn, m.maxn, m.bucket) if m.name == "subword" else None)
    return_freed_memory()
    model = make_model(config.model, len(vocab), vocab.words).to(device)  # model=subword: its n-gram rows too
    # the pipeline and every "auto"/null setting, resolved once (SGNSError for a combination none runs)
    resolved = resolve(config, device, corpus.total_tokens, team.world_size)
    team.form(corpus, vocab, model, config.data.chunk_tokens, config.data.streams)
    log.info(f"resolved: {resolved.describe()}")
    run.write_resolved(to_yaml(resolved.with_asked(record)))
    pipeline = make_pipeline(resolved, corpus, vocab, model, device, team.shard)
    rows = start_from(config.model, model, vocab.words, resumed=resume is not None, log=log.info)
    if config.model.freeze_init:
        pipeline.freeze(model.input.weight, rows)
    state = TrainState(loss_sum=torch.zeros((), device=device))
    if resume is not None:
        restore(resume, vocab, model, pipeline, state, team, rank_state)
    team.start()  # every rank from rank 0's tables (fresh or restored)
    at_end = resume is not None and state.words_done >= pipeline.total_words  # killed writing its outputs
    tb = run.tblog(state.words_done, at_end, state.last_point if state.step % t.log_every == 0 else None)
    evals = EvalSchedule(config.eval.every_words, config.eval.points, pipeline.total_words, state.words_done,
                         bool(suite))
    guard = DivergenceGuard(config.optimizer, model.untrained_loss(config.data.negatives), run.path, config.dist,
                            ranks=team.world_size)
    # The setup's temporaries (the float64 sampling tables) were freed into the heap, on top of the model's tables:
    # give those pages back before the run's longest stretch (peak memory).
    return_freed_memory()

    # ------------------------------------------------------------------------------------------- the loop
    total_words = pipeline.total_words
    bar = run.progress_bar(total_words, state.words_done, enabled=t.progress)
    # this process's own words and training seconds: its words/s (a resumed run's state counts earlier processes')
    words_before, seconds_before = state.words_done, state.train_seconds
    cadence = CheckpointCadence(t.checkpoint_minutes, t.checkpoint_every_words, t.checkpoint_every, state.step,
                                state.words_done, time.perf_counter())
    last_loss = state.last_point[0] if state.last_point else float("nan")
    interrupted = None
    with StopRequest() as stop:
        tick, tick_words = time.perf_counter(), state.words_done
        for batch in pipeline.batches(state.position):
            lr = learning_rate(config.optimizer, state.words_done / total_words)
            loss = pipeline.step(batch, lr)
            bar.update(int(batch.words_done) - int(state.words_done))
            state.advance(batch, loss)
            # merge the ranks' tables when due; stop and checkpoint only as all agree
            stop_now, checkpoint_now = team.after_batch(
                batch, stop.signal is not None, cadence.due(state.step, state.words_done, time.perf_counter()))

            if state.step % t.log_every == 0:
                now = time.perf_counter()
                if state.loss_pairs:  # an interval of batches with no pairs (all subsampled) has no loss: 0/0
                    last_loss = guard.check_loss(state.step, state.window_loss())
                speed = (state.words_done - tick_words) / max(now - tick, 1e-9)
                state.train_seconds += now - tick
                tick, tick_words = now, state.words_done
                state.last_point = (last_loss, lr, speed)
                tb.train_point(state.words_done, *state.last_point)
                bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr:.4f}", refresh=False)
                state.reset_window()
            if evals.due(state.words_done, state.train_seconds + time.perf_counter() - tick):
                tb.evaluation(evals.run(evaluate, suite, model, device, True), state.words_done)
                tick += evals.last_seconds  # evaluating is not training: words/s and train_seconds leave it out
            if checkpoint_now:
                save(record, run, state, model, pipeline, vocab, tb, guard, team)
                cadence.written(state.step, state.words_done, time.perf_counter())
            if stop_now:
                interrupted = stop.signal or signal.SIGTERM  # another rank's signal
                break
        state.train_seconds += time.perf_counter() - tick
        if state.loss_pairs:
            last_loss = guard.check_loss(state.step, state.window_loss())
        bar.close()
        if interrupted is not None:
            save(record, run, state, model, pipeline, vocab, tb, guard, team)
            tb.close()
            raise team.error(Stopped(f"stopped by {signal.Signals(interrupted).name} at step {state.step}, "
                                     f"checkpoint saved in {run.path / 'checkpoints'}", run.path))

    # ------------------------------------------------------------------------------------------- finish
    distributed = team.report()  # every rank's figures, gathered (None for a team of one)
    if state.pairs == 0:  # the vectors would be the untrained initial ones: no result to write
        raise SGNSError(f"no training pairs: {int(state.words_done):,} words read but every one was subsampled or "
                        f"dropped (vocabulary {len(vocab):,} words); raise data.subsample (0 disables it; now "
                        f"{config.data.subsample}), corpus.max_distinct_words or data.max_vocab_size, or lower "
                        f"data.min_count")
    vectors = guard.check(state.step, "the vectors", model.word_vectors().cpu().numpy())  # subword: mean of rows
    writing = time.perf_counter()
    run.write_vectors(vocab.words, vectors, binary=t.export_binary)
    vectors_seconds = time.perf_counter() - writing
    tb.projector(vocab.words, vectors, vocab.counts, config.eval.projector_words, state.words_done)
    results = evals.run(evaluate, suite, model, device, False, vectors)
    tb.evaluation(results, state.words_done)
    tb.evaluation_summary(results, state.words_done)
    log_evaluation(results, evals, state.train_seconds)
    process_words = int(state.words_done) - int(words_before)  # this process's (resumed: since the checkpoint)
    process_seconds = state.train_seconds - seconds_before
    words_per_sec = process_words / process_seconds if process_seconds else 0.0
    wall_seconds = time.perf_counter() - started
    metrics: Dict[str, Any] = {
        "status": "finished",
        "loss": last_loss,
        "train_words": int(state.words_done),
        "pairs": state.pairs,
        "steps": state.step,
        "vocab_size": len(vocab),
        "corpus_words": corpus.total_tokens,
        "replaced_bytes": corpus.replaced_bytes,
        "process_words": process_words,  # trained by this process (resumed: since then)
        "train_seconds": process_seconds,  # this process's time in the loop, evaluations left out
        "train_seconds_total": state.train_seconds,  # every process's of this run (equal unless resumed)
        "words_per_sec": words_per_sec,  # process_words / train_seconds
        "wall_seconds": wall_seconds,
        "device": str(device),
        "eval_seconds": evals.seconds,
        "vectors_seconds": vectors_seconds,  # writing vectors.bin (or .txt)
        "eval": results,
        **({"eval_skipped": suite.skipped} if suite.skipped else {}),  # named benchmarks under eval.min_coverage
        **({"distributed": distributed} if distributed is not None else {}),
    }
    metrics = {**metrics, "objective": objective(config.objective, metrics)}
    if state.step % t.log_every:  # the last, partial log interval (a full one was logged in the loop)
        tb.final_loss(state.words_done, last_loss)
    tb.hparams(record, state.words_done)
    tb.close()
    state.finished = True  # last: a finished checkpoint means every output exists
    writing = time.perf_counter()
    save(record, run, state, model, pipeline, vocab, tb, guard, team, metrics)
    # metrics.json says finished only once the final checkpoint exists: killed or out of disk space before, the
    # same command must train again, not find a "finished" run without a checkpoint and refuse the run dir
    metrics = run.write_metrics(metrics, config.objective)
    resumed = f" ({process_words:,} in this process)" if words_before else ""
    log.info(f"done: {int(state.words_done):,} words{resumed} in {wall_seconds:.1f}s ({words_per_sec:,.0f} words/s "
             f"training), loss {last_loss:.4f}; vectors written in {vectors_seconds:.1f}s, the final checkpoint in "
             f"{time.perf_counter() - writing:.1f}s; outputs in {run.path}")
    return metrics


# ----------------------------------------------------------------------------------------------- helpers


def read_corpus(config: Config, ties: str = TIES) -> tuple[EncodedCorpus, Vocabulary]:
    """corpus -> token ids (cached) -> vocabulary (words of equal count ordered by `ties`)."""
    d = config.data
    source = make_source(config.corpus, d.cache_dir)
    corpus = encode(source, d.cache_dir, log=log.info)
    if corpus.total_tokens == 0:
        raise SGNSError(f"corpus {source.description} is empty: it holds no words")
    c = config.corpus
    corpus = apply_phrases(corpus, c.phrases, c.phrase_threshold, c.phrase_min_count, d.cache_dir, log=log.info)
    vocab = Vocabulary.build(corpus.words, corpus.counts, d.min_count, d.max_vocab_size, ties)
    # Every distinct word as a Python string (1.9M at 50M Zipf words, ~100 MiB) is not needed from here on: the
    # vocabulary holds the kept ones and the pipelines size their id table by len(corpus.counts). Peak memory.
    corpus.words = []
    map_counts(corpus)  # read by the vocabulary: from here on only their number is used
    release_pages(corpus.offsets)  # read whole by the phrases; the batches read it in pieces
    return_freed_memory()
    log.info(f"corpus: {corpus.total_tokens:,} words, vocabulary {len(vocab):,} (min_count={d.min_count})")
    return corpus, vocab


def restore(checkpoint: dict, vocab: Vocabulary, model: SGNS, pipeline: Pipeline, state: TrainState, team: Team,
            rank_state: Optional[dict] = None) -> None:
    """Put model, pipeline and state where the checkpoint's run stopped (under torchrun: ranks other than 0 get
    the model from rank 0 later, and their own data position and negatives from `rank_state`)."""
    if "model" in checkpoint:  # rank 0's, or a single process's
        if checkpoint_words(checkpoint["vocab"]) != vocab.words:
            raise SGNSError("the checkpoint's vocabulary differs from this corpus and config: resume with the "
                            "same corpus and data settings, or start a new run (another hydra.run.dir)")
        model.load_state_dict(checkpoint["model"])
        if isinstance(model, SubwordSGNS):  # the fill its untrained rows hold: the checkpoint's, or unknown (whole)
            model.input_fill = checkpoint.get("input_fill")
        pipeline.load_state_dict(checkpoint)
        state.load_state_dict(checkpoint)
    else:
        state.load_state_dict({**checkpoint, "torch_rng": torch.get_rng_state()})
    if rank_state is not None:
        pipeline.load_state_dict(rank_state[PIPELINE_STATE_KEY])
        state.position = tuple(rank_state["position"])
        state.words_done = rank_state["words_done"]  # this rank's own estimate (the lr it continues with)
        team.load_rank_state(rank_state)
    log.info(f"resuming at step {state.step} (epoch {state.position[0] + 1}, {state.words_done:,.0f} words done)")


class DivergenceGuard:
    """The one divergence check: NaN/inf in the loss, parameters or vectors, or a finite mean loss far above an
    untrained model's; the error names the step and the likely cause."""

    # A diverging run can stay finite; runs that still learn stay far below 100x an untrained model's loss
    # (every logit 0: (1 + K) ln 2 per pair, ln |V| for the full softmax). Measurements: docs/notes_from_code.md.
    LOSS_LIMIT_FACTOR = 100

    def __init__(self, optimizer: OptimizerConfig, untrained_loss: float, run_dir: Path,
                 dist: Optional[DistConfig] = None, ranks: int = 1) -> None:
        """`untrained_loss`: the model's loss per pair with every logit 0 (its `untrained_loss`)."""
        self.optimizer, self.run_dir = optimizer, run_dir
        # Under torchrun the merge can diverge where one process does not
        self.merge = (f"; with {ranks} ranks, dist.merge={dist.merge} every dist.sync_every_words="
                      f"{dist.sync_every_words} may be the cause: try the same config in one process"
                      if ranks > 1 and dist is not None else "")
        self.untrained_loss = untrained_loss
        self.loss_limit = self.LOSS_LIMIT_FACTOR * self.untrained_loss

    def check(self, step: int, what: str, value: Any) -> Any:
        """`value` (a number, tensor, array, or iterable of tensors) if all of it is finite; else SGNSError."""
        if isinstance(value, (torch.Tensor, np.ndarray)):
            finite = all_finite(value)
        elif isinstance(value, (int, float)):
            finite = math.isfinite(value)
        else:
            finite = all(all_finite(v) for v in value)
        if not finite:
            raise self.diverged(f"{what} became NaN/inf by step {step}")
        return value

    def check_loss(self, step: int, mean_loss: float) -> float:
        """`mean_loss` (per pair) if it is finite and under the limit; else SGNSError."""
        self.check(step, "the loss", mean_loss)
        if mean_loss > self.loss_limit:
            raise self.diverged(f"the loss reached {mean_loss:.3g} per pair by step {step}, over "
                                f"{self.LOSS_LIMIT_FACTOR}x an untrained model's {self.untrained_loss:.2f}")
        return mean_loss

    def diverged(self, what_happened: str) -> SGNSError:
        o = self.optimizer
        usual = USUAL_LR.get(o.name)
        advice = f"try {usual}" if usual is not None and o.lr > usual else f"try a smaller one, e.g. {o.lr / 4:g}"
        kept = list_checkpoints(self.run_dir)
        where = (f"the last good one, {kept[-1]}, is kept" if kept else "none was written before it either")
        return SGNSError(f"{what_happened}: training diverged, most likely because optimizer.lr={o.lr} is too high "
                         f"for optimizer.name={o.name} ({advice}){self.merge}; no checkpoint was written after it: "
                         f"{where}")


def all_finite(values: torch.Tensor | np.ndarray) -> bool:
    """Whether every element is finite. On the CPU, through a float64 sum: it is NaN/inf exactly when an element
    is (float32 values cannot overflow it), and it needs no array of flags; torch.isfinite(...).all() on a
    CPU table also starts torch's thread pool, which the numba kernel never does (+42 MiB resident, measured)."""
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
            return bool(torch.isfinite(values).all())
        values = values.detach().numpy()
    return math.isfinite(float(np.sum(values, dtype=np.float64)))


def save(record: Dict[str, Any], run: RunDir, state: TrainState, model: SGNS, pipeline: Pipeline, vocab: Vocabulary,
         tb: TBLog, guard: DivergenceGuard, team: Team, metrics: Optional[dict] = None) -> None:
    """Write a checkpoint: the state, the model, the pipeline's state, the vocabulary and the config's record (plain
    data) in one dict.

    Under torchrun every rank calls this at the same merge: rank 0 gathers each rank's data position and
    negative-sampler state and writes the one checkpoint (the tables are identical after a merge)."""
    section = None if metrics is not None else team.checkpoint_section(
        lambda: {"position": list(state.position), "words_done": state.words_done,
                 PIPELINE_STATE_KEY: pipeline.state_dict()})

    def checkpoint() -> dict:
        # Never save a diverged model: it would push the last good checkpoint out of the kept ones.
        guard.check(state.step, "the parameters", model.parameters())
        if state.loss_pairs:
            guard.check_loss(state.step, state.window_loss())
        tb.flush()  # every point up to this step is on disk before a checkpoint says the step is done
        # model=subword alone stores only the input rows words have (the rest is its initial fill: SubwordSGNS);
        # under torchrun the merges' arithmetic need not leave the other rows bit for bit: the whole table
        tables, fill = (model.checkpoint_state() if isinstance(model, SubwordSGNS) and team.world_size == 1
                        else (model.state_dict(), None))
        return {
            "model": tables,
            **({"input_fill": fill} if fill is not None else {}),
            **pipeline.state_dict(),
            **state.state_dict(),
            "vocab": vocab.state_dict(),
            "config": record,
            "metrics": metrics,
            **({"distributed": section} if section is not None else {}),  # every rank's position (torchrun)
        }

    run.save_checkpoint(checkpoint, state.step, record["trainer"]["keep_checkpoints"])


def evaluate(suite: EvalSuite, model: SGNS, device: torch.device, sampled: bool,
             vectors: Optional[np.ndarray] = None) -> Dict[str, dict]:
    """Every benchmark of the run on the current word vectors (`sampled`: a point during training; `vectors`: the
    final ones, already composed); a subword run's words outside the vocabulary from its n-gram rows. No benchmark:
    nothing is computed (a subword run's word vectors are a pass over its rows)."""
    if not suite:
        return {}
    subwords = getattr(model, "table", None)
    ngram_table = model.input.weight.detach()[subwords.n_words:] if subwords is not None else None
    if not sampled:
        final = torch.from_numpy(vectors) if vectors is not None else model.word_vectors()
        return suite.score(final, device, ngram_table=ngram_table)
    with one_cpu_thread(device):
        return suite.score(model.word_vectors(), device, sampled, ngram_table=ngram_table)


def log_evaluation(results: Dict[str, dict], evals: EvalSchedule, train_seconds: float) -> None:
    if evals.count > 1:
        log.info(f"evaluated {evals.count} times ({evals.count - 1} during training, see TensorBoard's eval/ "
                 f"curves): {evals.seconds:.1f}s, {evals.seconds / max(train_seconds, 1e-9):.1%} of the training time")
    for name, m in results.items():
        if "accuracy" in m:
            log.info(f"eval {name}: analogy accuracy {m['accuracy']:.4f} (semantic {m['semantic_accuracy']:.4f}, "
                     f"syntactic {m['syntactic_accuracy']:.4f}), coverage {m['coverage']:.1%} "
                     f"({m['seen']:,} of {m['total']:,} questions)")
        else:
            spearman = "n/a" if m["spearman"] is None else f"{m['spearman']:.4f}"
            log.info(f"eval {name}: spearman {spearman}, coverage {m['coverage']:.1%} ({m['pairs']:,} of "
                     f"{m['total']:,} pairs)")
