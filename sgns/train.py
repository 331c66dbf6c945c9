"""Training: corpus -> vocabulary -> pairs + negatives -> model -> loss -> update -> checkpoints, logs, vectors.

`train(cfg)` is a plain function returning the run's metrics; `main` is the Hydra command line
(`sgns-train`, `python -m sgns.train`), which returns the objective so sweepers can optimise it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sgns.checkpoint import latest_loadable, load_checkpoint, save_checkpoint
from sgns.config import register_configs, validate
from sgns.corpus import encode, make_source
from sgns.data import PairBatches, unigram_table
from sgns.errors import SGNSError
from sgns.evaluate import evaluate_all
from sgns.export import write_projector
from sgns.hotpath import NegativeSampler, draw_negatives, optimizer_step, sgd_step
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
            sys.stderr.write("\nsgns: second interrupt, exiting now (the last checkpoint is intact)\n")
            os._exit(130)
        self.signal = sig

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def find_resume(cfg: Any, run_dir: Path) -> Optional[dict]:
    mode = cfg.trainer.resume
    if mode == "never":
        return None
    if mode != "auto":
        return load_checkpoint(mode)
    found = latest_loadable(run_dir, warn=log.warning)
    return found[1] if found else None


def write_metrics(run_dir: Path, metrics: dict) -> None:
    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, default=float))
    os.replace(tmp, run_dir / "metrics.json")


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Train word vectors as `cfg` says; write everything into cfg.trainer.run_dir; return the metrics."""
    validate(cfg)
    started = time.perf_counter()
    t, d = cfg.trainer, cfg.data
    run_dir = Path(t.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)

    resume = find_resume(cfg, run_dir)
    if resume is not None and resume["progress"].get("finished"):
        log.info(f"run in {run_dir} already finished; nothing to do (trainer.resume=never retrains elsewhere)")
        return json.loads((run_dir / "metrics.json").read_text())

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
        p = resume["progress"]
        dataset.start = (p["epoch"], p["chunk"], p["batch"])
        step, pairs, words_before, train_seconds = p["step"], p["pairs"], p["words_done"], p["train_seconds"]
        log.info(f"resuming at step {step} (epoch {p['epoch'] + 1}, {words_before:,.0f} words done)")

    # logs
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=step + 1 if step else None)
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    if cfg.corpus.kind == "synthetic" and cfg.corpus.synthetic.evaluate:
        from sgns.synthetic import ensure_synthetic

        eval_cfg["analogies"] = [str(ensure_synthetic(cfg.corpus.synthetic, d.cache_dir)[1]), *eval_cfg["analogies"]]
    eval_cfg = OmegaConf.create(eval_cfg)

    def evaluate_now(words_done: float) -> Dict[str, dict]:
        results = evaluate_all(eval_cfg, vocab.words, model.input.weight.detach(), device)
        for name, metrics in results.items():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and value is not None:
                    writer.add_scalar(f"eval/{name}/{key}", value, int(words_done))
        return results

    def checkpoint(batch_position: tuple, finished: bool = False) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "sampler": sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "vocab": vocab.state_dict(),
            "progress": {"epoch": batch_position[0], "chunk": batch_position[1], "batch": batch_position[2],
                         "step": step, "pairs": pairs, "words_done": words_before,
                         "train_seconds": train_seconds, "finished": finished},
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        save_checkpoint(state, run_dir, step, t.keep_checkpoints)

    # the loop
    total_words = dataset.total_words()
    from tqdm import tqdm

    bar = tqdm(total=total_words, initial=int(words_before), unit="w", unit_scale=True, delay=2.0,
               disable=not t.progress, dynamic_ncols=True, file=sys.stderr)
    k, shared = d.negatives, d.shared_negatives
    loss_sum, loss_pairs = torch.zeros((), device=device), 0
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
                    raise SGNSError(f"loss became {last_loss} at step {step} (lr {lr:.3g}): training diverged, "
                                    f"most likely optimizer.lr={cfg.optimizer.lr} is too high; the last good "
                                    f"checkpoint in {run_dir / 'checkpoints'} is kept")
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
                raise SGNSError(f"loss became {last_loss} at step {step}: training diverged, most likely "
                                f"optimizer.lr={cfg.optimizer.lr} is too high")
        bar.close()
        if interrupted is not None:
            checkpoint(position)
            writer.close()
            name = signal.Signals(interrupted).name
            raise SGNSError(f"stopped by {name} at step {step}; checkpoint saved. Run the same command again "
                            f"to resume (trainer.resume=auto)")

    # outputs: vectors, evaluation, metrics, final checkpoint
    vectors = model.input.weight.detach().cpu().numpy()
    if not np.isfinite(vectors).all():
        raise SGNSError(f"the vectors hold NaN or inf after step {step}: lower optimizer.lr")
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
    checkpoint(position, finished=True)
    write_metrics(run_dir, metrics)
    writer.add_scalar("train/loss", last_loss, step)
    log_hparams(writer, cfg, metrics, step)
    writer.close()
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
        sys.stderr.write(f"sgns-train: error: {e}\n")
        sys.exit(2)


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


def main() -> None:
    """Console entry point: `sgns-train [overrides]`."""
    try:
        check_overrides(sys.argv[1:])
    except SGNSError as e:
        sys.stderr.write(f"sgns-train: error: {e}\n")
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
