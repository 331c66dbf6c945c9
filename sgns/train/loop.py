"""The training loop, read top to bottom: setup, the loop, finish.

corpus -> vocabulary -> model + backend (pairs and negatives, the kernel's step) -> the loop over batches
-> checkpoints, TensorBoard points, vectors, evaluation, metrics.json. `train(cfg)` is a plain function
returning the run's metrics; the command line around it is sgns.cli.train.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sgns.config import check_resolvable, validate
from sgns.corpus import EncodedCorpus, encode, make_source
from sgns.device import resolve_device
from sgns.errors import SGNSError
from sgns.evaluate import evaluate_all
from sgns.kernels import Backend, learning_rate, make_backend
from sgns.model import SGNS
from sgns.synthetic import evaluation_config
from sgns.train.checkpoint import remove_stale_temp_files, save_checkpoint
from sgns.train.metrics import objective, read_metrics, write_metrics
from sgns.train.rundir import RunLock, check_run_dir
from sgns.train.signals import StopRequest, sigterm_interrupts
from sgns.train.state import TrainState, seed_everything
from sgns.train.tblog import TBLog
from sgns.vectors import save_word2vec
from sgns.vocab import Vocabulary

log = logging.getLogger("sgns")


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Train word vectors as `cfg` says; write everything into cfg.trainer.run_dir; return the metrics.

    Holds a lock on the run dir while it trains; SIGINT/SIGTERM outside the training loop (reading the corpus,
    writing outputs) become an SGNSError, inside it they stop after the current step with a checkpoint.
    """
    validate(cfg)
    check_resolvable(cfg)
    lock = RunLock(cfg.trainer.run_dir).acquire()
    try:
        with sigterm_interrupts():
            return _train(cfg, Path(cfg.trainer.run_dir))
    except KeyboardInterrupt:
        raise SGNSError(f"interrupted outside the training loop; nothing is lost: run the same command again to "
                        f"continue (hydra.run.dir={cfg.trainer.run_dir})") from None
    finally:
        lock.release()


def _train(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    # ------------------------------------------------------------------------------------------- setup
    started = time.perf_counter()
    t = cfg.trainer
    run_dir.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    seed_everything(t.seed)
    resume = find_resume(cfg, run_dir)
    if resume is not None and resume["progress"].get("finished"):
        return metrics_of_finished_run(run_dir, resume)

    corpus, vocab = read_corpus(cfg, run_dir)
    model = SGNS(len(vocab), cfg.model.dim).to(device)
    backend = make_backend(cfg, corpus, vocab, model, device)
    state = TrainState(loss_sum=torch.zeros((), device=device))
    if resume is not None:
        restore(resume, vocab, model, backend, state)
    tb = TBLog(run_dir / "tb", purge_step=state.step + 1)
    eval_cfg = evaluation_config(cfg)
    guard = DivergenceGuard(cfg, run_dir)

    # ------------------------------------------------------------------------------------------- the loop
    from tqdm import tqdm

    total_words = backend.total_words
    bar = tqdm(total=total_words, initial=int(state.words_done), unit="w", unit_scale=True, delay=2.0,
               disable=not t.progress, dynamic_ncols=True, file=sys.stderr)
    every = cfg.eval.every_words
    next_eval = (state.words_done // every + 1) * every if every else None
    last_loss = float("nan")
    interrupted = None
    with StopRequest() as stop:
        tick, tick_words = time.perf_counter(), state.words_done
        for batch in backend.batches(state.position):
            lr = learning_rate(cfg.optimizer, state.words_done / total_words)
            loss = backend.step(batch, lr)
            bar.update(int(batch.words_done) - int(state.words_done))
            state.advance(batch, loss)

            if state.step % t.log_every == 0:
                now = time.perf_counter()
                last_loss = guard.check(state.step, "the loss", state.window_loss())
                speed = (state.words_done - tick_words) / max(now - tick, 1e-9)
                state.train_seconds += now - tick
                tick, tick_words = now, state.words_done
                tb.train_point(state.step, last_loss, lr, speed)
                bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr:.4f}", refresh=False)
                state.reset_window()
            if next_eval is not None and state.words_done >= next_eval:
                tb.evaluation(evaluate(eval_cfg, vocab, model, device), state.step, state.words_done)
                next_eval += every
            if t.checkpoint_every and state.step % t.checkpoint_every == 0:
                save(cfg, run_dir, state, model, backend, vocab, tb, guard)
            if stop.signal is not None:
                interrupted = stop.signal
                break
        state.train_seconds += time.perf_counter() - tick
        if state.loss_pairs:
            last_loss = guard.check(state.step, "the loss", state.window_loss())
        bar.close()
        if interrupted is not None:
            save(cfg, run_dir, state, model, backend, vocab, tb, guard)
            tb.close()
            raise SGNSError(f"stopped by {signal.Signals(interrupted).name} at step {state.step}, checkpoint saved "
                            f"in {run_dir / 'checkpoints'}; to resume, run the same command again with "
                            f"hydra.run.dir={run_dir}")

    # ------------------------------------------------------------------------------------------- finish
    vectors = guard.check(state.step, "the vectors", model.input.weight.detach().cpu().numpy())
    save_word2vec(run_dir / ("vectors.bin" if t.export_binary else "vectors.txt"), vocab.words, vectors,
                  binary=t.export_binary)
    tb.projector(vocab.words, vectors, vocab.counts, cfg.eval.projector_words, state.step)
    results = evaluate(eval_cfg, vocab, model, device)
    tb.evaluation(results, state.step, state.words_done)
    log_evaluation(results)
    metrics: Dict[str, Any] = {
        "status": "finished",
        "loss": last_loss,
        "train_words": int(state.words_done),
        "pairs": state.pairs,
        "steps": state.step,
        "vocab_size": len(vocab),
        "corpus_words": corpus.total_tokens,
        "replaced_bytes": corpus.replaced_bytes,
        "train_seconds": state.train_seconds,
        "words_per_sec": state.words_done / state.train_seconds if state.train_seconds else 0.0,
        "wall_seconds": time.perf_counter() - started,
        "device": str(device),
        "eval": results,
    }
    metrics["objective"] = objective(cfg.objective, metrics)
    write_metrics(run_dir, metrics)
    if state.step % t.log_every:  # the last, partial log interval (a full one was logged in the loop)
        tb.final_loss(state.step, last_loss)
    tb.hparams(cfg, metrics, state.step)
    tb.close()
    state.finished = True  # last: a finished checkpoint means every output exists
    save(cfg, run_dir, state, model, backend, vocab, tb, guard, metrics)
    log.info(f"done: {metrics['train_words']:,} words in {metrics['wall_seconds']:.1f}s "
             f"({metrics['words_per_sec']:,.0f} words/s training), loss {last_loss:.4f}; outputs in {run_dir}")
    return metrics


# ----------------------------------------------------------------------------------------------- helpers


def find_resume(cfg: DictConfig, run_dir: Path) -> Optional[dict]:
    """The checkpoint to continue from (None: start fresh); SGNSError if run_dir holds a different run."""
    if remove_stale_temp_files(run_dir):
        log.info(f"removed a half-written checkpoint left in {run_dir / 'checkpoints'} by an interrupted write")
    found = check_run_dir(run_dir, cfg, warn=log.warning, mmap=False, locked_by_us=True)
    if found is not None:
        log.info(f"continuing from checkpoint {found[0]}")
    return found[1] if found else None


def metrics_of_finished_run(run_dir: Path, checkpoint: dict) -> Dict[str, Any]:
    """A finished run trains nothing again: its metrics (restoring metrics.json from the final checkpoint)."""
    log.info(f"the run in {run_dir} already finished; nothing to do (a new hydra.run.dir trains again)")
    if not (run_dir / "metrics.json").is_file() and checkpoint.get("metrics"):
        write_metrics(run_dir, checkpoint["metrics"])  # deleted since: the final checkpoint holds a copy
    return checkpoint.get("metrics") or read_metrics(run_dir)


def read_corpus(cfg: DictConfig, run_dir: Path) -> tuple[EncodedCorpus, Vocabulary]:
    """corpus -> token ids (cached) -> vocabulary, written to run_dir/vocab.txt."""
    d = cfg.data
    source = make_source(cfg.corpus, d.cache_dir)
    corpus = encode(source, d.cache_dir, log=log.info)
    if corpus.total_tokens == 0:
        raise SGNSError(f"corpus {source.description} is empty: it holds no words")
    vocab = Vocabulary.build(corpus.words, corpus.counts, d.min_count, d.max_vocab_size)
    vocab.save(run_dir / "vocab.txt")
    log.info(f"corpus: {corpus.total_tokens:,} words, vocabulary {len(vocab):,} (min_count={d.min_count})")
    return corpus, vocab


def restore(checkpoint: dict, vocab: Vocabulary, model: SGNS, backend: Backend, state: TrainState) -> None:
    """Put model, backend and state where the checkpoint's run stopped."""
    if list(checkpoint["vocab"]["words"]) != vocab.words:
        raise SGNSError("the checkpoint's vocabulary differs from this corpus and config: resume with the "
                        "same corpus and data settings, or start a new run (another hydra.run.dir)")
    model.load_state_dict(checkpoint["model"])
    backend.load_state_dict(checkpoint)
    state.load_state_dict(checkpoint)
    log.info(f"resuming at step {state.step} (epoch {state.position[0] + 1}, {state.words_done:,.0f} words done)")


class DivergenceGuard:
    """The one NaN/inf check: loss, parameters, vectors; the error names the step and the likely cause."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.optimizer, self.run_dir = cfg.optimizer, run_dir

    def check(self, step: int, what: str, value: Any) -> Any:
        """`value` (a number, tensor, array, or iterable of tensors) if all of it is finite; else SGNSError."""
        if isinstance(value, (torch.Tensor, np.ndarray)):
            finite = all_finite(value)
        elif isinstance(value, (int, float)):
            finite = math.isfinite(value)
        else:
            finite = all(all_finite(v) for v in value)
        if not finite:
            o = self.optimizer
            raise SGNSError(f"{what} became NaN/inf by step {step}: training diverged, most likely because "
                            f"optimizer.lr={o.lr} is too high for optimizer.name={o.name} (try 0.025 for sgd, "
                            f"0.001 for sparse_adam); no checkpoint was written after it, the last good one in "
                            f"{self.run_dir / 'checkpoints'} is kept")
        return value


def all_finite(values: torch.Tensor | np.ndarray) -> bool:
    """Whether every element is finite. On the CPU, through a float64 sum: it is NaN/inf exactly when an element
    is (float32 values cannot overflow it), and it needs no array of flags; torch.isfinite(...).all() on a
    CPU table also starts torch's thread pool, which the numba kernel never does (+42 MiB resident, measured)."""
    if isinstance(values, torch.Tensor):
        if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
            return bool(torch.isfinite(values).all())
        values = values.detach().numpy()
    return math.isfinite(float(np.sum(values, dtype=np.float64)))


def save(cfg: DictConfig, run_dir: Path, state: TrainState, model: SGNS, backend: Backend, vocab: Vocabulary,
         tb: TBLog, guard: DivergenceGuard, metrics: Optional[dict] = None) -> None:
    """Write a checkpoint: the state, the model, the backend's state, the vocabulary and the config in one dict."""
    # Never save a diverged model: it would push the last good checkpoint out of the kept ones.
    guard.check(state.step, "the parameters", model.parameters())
    guard.check(state.step, "the loss", state.loss_sum)
    tb.flush()  # every point up to this step is on disk before a checkpoint says the step is done
    checkpoint = {
        "model": model.state_dict(),
        **backend.state_dict(),
        **state.state_dict(),
        "vocab": vocab.state_dict(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "metrics": metrics,
    }
    save_checkpoint(checkpoint, run_dir, state.step, cfg.trainer.keep_checkpoints)


def evaluate(eval_cfg: DictConfig, vocab: Vocabulary, model: SGNS, device: torch.device) -> Dict[str, dict]:
    """Every benchmark file of the eval config, on the current input vectors."""
    return evaluate_all(eval_cfg, vocab.words, model.input.weight.detach(), device)


def log_evaluation(results: Dict[str, dict]) -> None:
    for name, m in results.items():
        if "accuracy" in m:
            log.info(f"eval {name}: analogy accuracy {m['accuracy']:.4f} ({m['seen']}/{m['total']} seen)")
        else:
            log.info(f"eval {name}: spearman {m['spearman']}, {m['pairs']} pairs")
