"""Training: corpus -> vocabulary -> pairs + negatives -> model -> loss -> update -> checkpoints, logs, vectors.

`train(cfg)` is a plain function returning the run's metrics; `main` is the Hydra command line
(`sgns-train`, `python -m sgns.train`), which returns the objective so sweepers can optimise it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sgns.checkpoint import RunLock, check_run_dir, remove_stale_temp_files, save_checkpoint
from sgns.config import register_configs, validate
from sgns.corpus import encode, make_source
from sgns.data import PairBatches, unigram_table
from sgns.errors import SGNSError, exit_with_error
from sgns.evaluate import evaluate_all
from sgns.export import write_projector
from sgns.hotpath import NegativeSampler, draw_negatives, make_sgd_step, optimizer_step
from sgns.hparams import log_hparams
from sgns.model import SGNS
from sgns.summarize import mark_failed
from sgns.vectors import save_word2vec
from sgns.vocab import Vocabulary

log = logging.getLogger("sgns")
register_configs()
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SGNSError(f"trainer.device={name} but CUDA is not available here: use trainer.device=cpu")
    return torch.device(name)


def learning_rate(cfg: Any, progress: float) -> float:
    """Word2vec's schedule: linear from lr to lr * min_lr_ratio over the whole run."""
    if not cfg.decay:
        return cfg.lr
    return cfg.lr * max(1.0 - progress, cfg.min_lr_ratio)


class StopRequest:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second SIGINT exits at once."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, sig: int, frame: Any) -> None:
        if self.signal is not None and sig == signal.SIGINT:
            # os._exit: no cleanup runs, and none is needed: every file is replaced atomically
            os.write(2, b"\nsgns: second interrupt, exiting now (the last checkpoint is intact)\n")
            os._exit(130)
        if self.signal is None:
            # os.write, not sys.stderr: a buffered write from a handler can interrupt another one (tqdm's)
            os.write(2, f"\nsgns: {signal.Signals(sig).name} received, stopping after this step and writing a "
                        f"checkpoint (Ctrl-C again exits at once)\n".encode())
        self.signal = sig

    def __exit__(self, *exc: Any) -> None:
        if self.signal is not None:
            return  # stopping: keep "a second SIGINT exits at once" until the process is gone
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def result_config(cfg: Any) -> Dict[str, Any]:
    """The resolved parts of the config that decide what a run computes (and trainer.resume), as plain data."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("corpus", "data", "model", "optimizer")}
    return {**parts, "trainer": {"epochs": cfg.trainer.epochs, "seed": cfg.trainer.seed,
                                 "resume": cfg.trainer.resume}}


def find_resume(cfg: Any, run_dir: Path) -> Optional[dict]:
    """The checkpoint to continue from (None: start fresh); SGNSError if run_dir holds a different run."""
    if remove_stale_temp_files(run_dir):
        log.info(f"removed a half-written checkpoint left in {run_dir / 'checkpoints'} by an interrupted write")
    found = check_run_dir(run_dir, result_config(cfg), warn=log.warning, mmap=False, locked_by_us=True)
    if found is not None:
        log.info(f"continuing from checkpoint {found[0]}")
    return found[1] if found else None


def diverged(step: int, what: str, cfg: Any, run_dir: Path) -> SGNSError:
    """The error for NaN/inf loss or parameters: names the step and the likely cause."""
    o = cfg.optimizer
    return SGNSError(f"{what} became NaN/inf by step {step}: training diverged, most likely because "
                     f"optimizer.lr={o.lr} is too high for optimizer.name={o.name} (try 0.025 for sgd, 0.001 for "
                     f"sparse_adam); no checkpoint was written after it, the last good one in "
                     f"{run_dir / 'checkpoints'} is kept")


def random_states() -> Dict[str, Any]:
    """Python's and numpy's global RNG states as checkpoint-safe plain data (nothing here draws from them
    today; kept so that code which does stays exact on resume)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                     cached]}


def set_random_states(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def write_metrics(run_dir: Path, metrics: dict) -> None:
    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    os.replace(tmp, run_dir / "metrics.json")


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Train word vectors as `cfg` says; write everything into cfg.trainer.run_dir; return the metrics.

    Holds a lock on the run dir while it trains; SIGINT/SIGTERM outside the training loop (reading the corpus,
    writing outputs) become an SGNSError, inside it they stop after the current step with a checkpoint.
    """
    validate(cfg)
    lock = RunLock(cfg.trainer.run_dir).acquire()
    previous_term = None
    try:
        previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread
        pass
    try:
        return _train(cfg)
    except KeyboardInterrupt:
        raise SGNSError(f"interrupted outside the training loop; nothing is lost: run the same command again to "
                        f"continue (hydra.run.dir={cfg.trainer.run_dir})") from None
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        lock.release()


def _train(cfg: DictConfig) -> Dict[str, Any]:
    validate(cfg)
    started = time.perf_counter()
    t, d = cfg.trainer, cfg.data
    run_dir = Path(t.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    random.seed(t.seed)

    resume = find_resume(cfg, run_dir)
    if resume is not None and resume["progress"].get("finished"):
        log.info(f"the run in {run_dir} already finished; nothing to do (a new hydra.run.dir trains again)")
        if not (run_dir / "metrics.json").is_file() and resume.get("metrics"):
            write_metrics(run_dir, resume["metrics"])  # deleted since: the final checkpoint holds a copy
        return resume.get("metrics") or json.loads((run_dir / "metrics.json").read_text())

    # corpus -> vocabulary
    source = make_source(cfg.corpus, d.cache_dir)
    corpus = encode(source, d.cache_dir, log=log.info)
    if corpus.total_tokens == 0:
        raise SGNSError(f"corpus {source.description} is empty: it holds no words")
    vocab = Vocabulary.build(corpus.words, corpus.counts, d.min_count, d.max_vocab_size)
    vocab.save(run_dir / "vocab.txt")
    log.info(f"corpus: {corpus.total_tokens:,} words, vocabulary {len(vocab):,} (min_count={d.min_count})")

    # pairs + negatives
    dataset = PairBatches(corpus, vocab, d.window, d.subsample, d.batch_size, d.chunk_tokens, t.epochs,
                          t.seed, device, d.prefetch)
    sampler = NegativeSampler(unigram_table(vocab.counts, d.ns_exponent), device, t.seed)
    sgd_step = make_sgd_step(t.kernel, device, t.threads)

    # model + optimizer
    model = SGNS(len(vocab), cfg.model.dim).to(device)
    optimizer = (torch.optim.SparseAdam(list(model.parameters()), lr=cfg.optimizer.lr)
                 if cfg.optimizer.name == "sparse_adam" else None)

    step, pairs, words_before, train_seconds = 0, 0, 0.0, 0.0
    if resume is not None:
        if list(resume["vocab"]["words"]) != vocab.words:
            raise SGNSError("the checkpoint's vocabulary differs from this corpus and config: resume with the "
                            "same corpus and data settings, or start a new run (another hydra.run.dir)")
        model.load_state_dict(resume["model"])
        if optimizer is not None and resume.get("optimizer") is not None:
            optimizer.load_state_dict(resume["optimizer"])
        sampler.load_state_dict(resume["sampler"])
        torch.set_rng_state(resume["torch_rng"])
        if "random_states" in resume:
            set_random_states(resume["random_states"])
        p = resume["progress"]
        dataset.start = (p["epoch"], p["chunk"], p["batch"])
        step, pairs, words_before, train_seconds = p["step"], p["pairs"], p["words_done"], p["train_seconds"]
        log.info(f"resuming at step {step} (epoch {p['epoch'] + 1}, {words_before:,.0f} words done)")

    # logs
    from torch.utils.tensorboard import SummaryWriter

    # purge_step: TensorBoard drops points a killed run logged after the checkpoint we continue from (all
    # tags, every x-axis is the step), so curves continue with no duplicated or missing steps.
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=step + 1)
    eval_logged_at = [-1]
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    if cfg.corpus.kind == "synthetic" and cfg.corpus.synthetic.evaluate:
        from sgns.synthetic import ensure_synthetic

        eval_cfg["analogies"] = [str(ensure_synthetic(cfg.corpus.synthetic, d.cache_dir)[1]), *eval_cfg["analogies"]]
    eval_cfg = OmegaConf.create(eval_cfg)

    def evaluate_now(words_done: float) -> Dict[str, dict]:
        results = evaluate_all(eval_cfg, vocab.words, model.input.weight.detach(), device)
        if eval_logged_at[0] == step:
            return results  # the final evaluation right after a periodic one: log each step once
        eval_logged_at[0] = step
        writer.add_scalar("eval/words_seen", words_done, step)  # maps the step axis to corpus words seen
        for name, metrics in results.items():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and value is not None:
                    writer.add_scalar(f"eval/{name}/{key}", value, step)  # step, like train/*: see purge_step
        return results

    def checkpoint(batch_position: tuple, finished: bool = False, metrics: Optional[dict] = None) -> None:
        # Never save a diverged model: it would push the last good checkpoint out of the kept ones.
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise diverged(step, "the parameters", cfg, run_dir)
        if not math.isfinite(float(loss_sum)):
            raise diverged(step, "the loss", cfg, run_dir)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "sampler": sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "random_states": random_states(),
            "vocab": vocab.state_dict(),
            # loss_sum/loss_pairs: the unlogged part of the current log interval, so the curve resumes exactly
            "progress": {"epoch": batch_position[0], "chunk": batch_position[1], "batch": batch_position[2],
                         "step": step, "pairs": pairs, "words_done": words_before,
                         "train_seconds": train_seconds, "finished": finished,
                         "loss_sum": float(loss_sum), "loss_pairs": loss_pairs},
            "config": OmegaConf.to_container(cfg, resolve=True),
            "metrics": metrics,
        }
        writer.flush()  # every point up to this step is on disk before a checkpoint says the step is done
        save_checkpoint(state, run_dir, step, t.keep_checkpoints)

    # the loop
    total_words = dataset.total_words()
    from tqdm import tqdm

    bar = tqdm(total=total_words, initial=int(words_before), unit="w", unit_scale=True, delay=2.0,
               disable=not t.progress, dynamic_ncols=True, file=sys.stderr)
    k, shared = d.negatives, d.shared_negatives
    loss_sum, loss_pairs = torch.zeros((), device=device), 0
    if resume is not None:
        loss_sum.fill_(resume["progress"].get("loss_sum", 0.0))
        loss_pairs = resume["progress"].get("loss_pairs", 0)
    last_loss = float("nan")
    next_eval = (words_before // cfg.eval.every_words + 1) * cfg.eval.every_words if cfg.eval.every_words else None
    position = dataset.start
    interrupted = None
    with StopRequest() as stop:
        tick, tick_words = time.perf_counter(), words_before
        for batch in dataset:
            lr = learning_rate(cfg.optimizer, words_before / total_words)
            negatives = draw_negatives(sampler, len(batch.centers), k, shared)
            if optimizer is None:
                loss = sgd_step(model, batch.centers, batch.contexts, negatives, lr)
            else:
                loss = optimizer_step(model, optimizer, batch.centers, batch.contexts, negatives,
                                      lr if cfg.optimizer.decay else None)
            step += 1
            pairs += len(batch.centers)
            loss_sum += loss
            loss_pairs += len(batch.centers)
            bar.update(int(batch.words_done) - int(words_before))
            words_before = batch.words_done
            position = (batch.epoch, batch.chunk, batch.index + 1)

            if step % t.log_every == 0:
                now = time.perf_counter()
                last_loss = float(loss_sum) / loss_pairs
                if not math.isfinite(last_loss):
                    raise diverged(step, "the loss", cfg, run_dir)
                speed = (words_before - tick_words) / max(now - tick, 1e-9)
                train_seconds += now - tick
                tick, tick_words = now, words_before
                writer.add_scalar("train/loss", last_loss, step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/words_per_sec", speed, step)
                bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lr:.4f}", refresh=False)
                loss_sum.zero_()
                loss_pairs = 0
            if next_eval is not None and words_before >= next_eval:
                evaluate_now(words_before)
                next_eval += cfg.eval.every_words
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                checkpoint(position)
            if stop.signal is not None:
                interrupted = stop.signal
                break
        now = time.perf_counter()
        train_seconds += now - tick
        if loss_pairs:
            last_loss = float(loss_sum) / loss_pairs
            if not math.isfinite(last_loss):
                raise diverged(step, "the loss", cfg, run_dir)
        bar.close()
        if interrupted is not None:
            checkpoint(position)
            writer.close()
            name = signal.Signals(interrupted).name
            raise SGNSError(f"stopped by {name} at step {step}, checkpoint saved in {run_dir / 'checkpoints'}; "
                            f"to resume, run the same command again with hydra.run.dir={run_dir}")

    # outputs: vectors, evaluation, metrics, final checkpoint
    vectors = model.input.weight.detach().cpu().numpy()
    if not np.isfinite(vectors).all():
        raise diverged(step, "the vectors", cfg, run_dir)
    out_name = "vectors.bin" if t.export_binary else "vectors.txt"
    save_word2vec(run_dir / out_name, vocab.words, vectors, binary=t.export_binary)
    write_projector(writer, vocab.words, vectors, vocab.counts, cfg.eval.projector_words, step)
    results = evaluate_now(words_before)
    for name, m in results.items():
        if "accuracy" in m:
            log.info(f"eval {name}: analogy accuracy {m['accuracy']:.4f} ({m['seen']}/{m['total']} seen)")
        else:
            log.info(f"eval {name}: spearman {m['spearman']}, {m['pairs']} pairs")
    words_trained = words_before
    metrics: Dict[str, Any] = {
        "status": "finished",
        "loss": last_loss,
        "train_words": int(words_trained),
        "pairs": pairs,
        "steps": step,
        "vocab_size": len(vocab),
        "corpus_words": corpus.total_tokens,
        "replaced_bytes": corpus.replaced_bytes,
        "train_seconds": train_seconds,
        "words_per_sec": words_trained / train_seconds if train_seconds else 0.0,
        "wall_seconds": time.perf_counter() - started,
        "device": str(device),
        "eval": results,
    }
    metrics["objective"] = objective(cfg, metrics)
    write_metrics(run_dir, metrics)
    if step % t.log_every:  # the last, partial log interval (a full one was logged in the loop)
        writer.add_scalar("train/loss", last_loss, step)
    log_hparams(writer, cfg, metrics, step)
    writer.close()
    checkpoint(position, finished=True, metrics=metrics)  # last: a finished checkpoint means every output exists
    log.info(f"done: {metrics['train_words']:,} words in {metrics['wall_seconds']:.1f}s "
             f"({metrics['words_per_sec']:,.0f} words/s training), loss {last_loss:.4f}; outputs in {run_dir}")
    return metrics


def objective(cfg: Any, metrics: Dict[str, Any]) -> float:
    """What a sweeper optimises: the first analogy accuracy (maximise) if any, else the loss (minimise)."""
    choice = cfg.objective
    if choice == "auto":
        for result in metrics["eval"].values():
            if "accuracy" in result:
                return float(result["accuracy"])
        return float(metrics["loss"])
    if choice == "loss":
        return float(metrics["loss"])
    value: Any = metrics
    for part in choice.split("."):
        if not isinstance(value, dict) or part not in value:
            raise SGNSError(f"objective={choice!r} names no metric; use auto, loss or a path like "
                            f"eval.wordsim353.spearman")
        value = value[part]
    return float(value)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    try:
        return objective(cfg, train(cfg))
    except SGNSError as e:
        mark_failed(cfg.trainer.run_dir, e)  # metrics.json says failed and why; sgns-summarize shows it
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error(f"error: {e}")
            raise  # the sweep goes on with the other jobs and reports this one at the end
        exit_with_error("sgns-train", e)


def check_overrides(argv: List[str]) -> None:
    """Compose the config before Hydra runs, so a bad key or value fails in one line and writes nothing."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a in ("-m", "--multirun") or a.startswith("-") for a in argv):
        flags = [a for a in argv if a.startswith("-")]
        if set(flags) - {"-m", "--multirun"}:
            return  # --help, --cfg, -c ...: Hydra's own business
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise SGNSError(str(e).strip().splitlines()[0]) from None
    plain = []
    for o in parsed:
        if o.is_hydra_override() or o.get_key_element().startswith("hydra"):
            continue
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                continue
            plain.extend(f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator())
        else:
            plain.append(o.input_line)
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            # Sweep values are checked one by one; other keys get their first value.
            seen_keys: Dict[str, List[str]] = {}
            for item in plain:
                seen_keys.setdefault(item.split("=", 1)[0], []).append(item)
            for key, items in seen_keys.items():
                for item in items:
                    others = [v[0] for k, v in seen_keys.items() if k != key]
                    cfg = compose("train", overrides=[*others, item])
                    OmegaConf.resolve(cfg.data)
                    validate(cfg)
            if not plain:
                validate(compose("train"))
    except SGNSError:
        raise
    except Exception as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        msg = "; ".join(lines[:3]) if lines else type(e).__name__
        raise SGNSError(f"bad config: {msg}") from None


def check_existing_run(argv: List[str]) -> None:
    """Refuse, before Hydra rewrites `.hydra/*.yaml` there, a hydra.run.dir that holds a different run, one in
    use, or checkpoints that trainer.resume=never would overwrite (single runs; sweeps get fresh dirs)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.startswith("-") for a in argv):
        return  # multirun, --help, --cfg ...
    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
    except Exception:
        return  # check_overrides reports it
    run_dir, plain = None, []
    for o in parsed:
        key = o.get_key_element()
        if key == "hydra.run.dir" and not o.is_sweep_override():
            run_dir = str(o.value())
        elif not (o.is_hydra_override() or key.startswith("hydra")):
            plain.append(o.input_line)
    if not run_dir or "${" in run_dir or not Path(run_dir).expanduser().is_dir():
        return
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=plain)
    check_run_dir(Path(run_dir).expanduser(), result_config(cfg), warn=lambda _: None, mmap=True)


def main() -> None:
    """Console entry point: `sgns-train [overrides]`."""
    try:
        check_overrides(sys.argv[1:])
        check_existing_run(sys.argv[1:])
    except SGNSError as e:
        exit_with_error("sgns-train", e)
    hydra_main()


if __name__ == "__main__":
    main()
