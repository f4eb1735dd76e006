"""What a run reports after each step: a row of log.csv, TensorBoard's events, the progress bar
and the printed lines, all from one `Progress.report(step, ...)` call of the training loop.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from rapgen.finetune.config import TrainConfig, say
from rapgen.finetune.events import FOLDER as EVENTS_FOLDER
from rapgen.finetune.events import EventLog
from rapgen.finetune.run import BestSoFar, Run


class Progress:
    """Where each step's figures go: log.csv, TensorBoard's events, the progress bar and the printed lines."""

    def __init__(self, cfg: TrainConfig, run: Run, step: int):
        from tqdm.auto import tqdm  # not at the top: `rapgen train`'s flag mistakes import no tqdm

        self.cfg = cfg
        self.log = run.open_log(step)
        self.events = EventLog(os.path.join(run.dir, EVENTS_FOLDER), step) if cfg.tensorboard else None
        self.bar = tqdm(
            total=None if cfg.steps == -1 else cfg.steps,
            initial=step,
            disable=cfg.quiet,
            unit="step",
            dynamic_ncols=True,
        )
        self.avg = [0.0, 0.0]  # the loss's moving average: decayed sum, decayed count
        self.val_loss = None  # the last one measured
        self.start = time.time()

    def report(
        self,
        step: int,
        loss: float,
        lr: float,
        speed: float,
        loss_scale,
        val_loss: Optional[float],
        new_best: bool,
        best: BestSoFar,
        samples: Optional[str],
        figures: dict,
    ) -> None:
        """Record step `step` everywhere (val_loss: None when this step did not validate; loss_scale: the
        trainer's variable, read only when TensorBoard is written)."""
        cfg = self.cfg
        self.avg = [self.avg[0] * 0.99 + loss, self.avg[1] * 0.99 + 1.0]
        avg = self.avg[0] / self.avg[1]
        if val_loss is not None:
            self.val_loss = val_loss
        self.log.write(
            step=step,
            loss=f"{loss:.5f}",
            avg_loss=f"{avg:.5f}",
            val_loss="" if val_loss is None else f"{val_loss:.5f}",
            learning_rate=f"{lr:.3g}",
            tokens_per_sec=f"{speed:.1f}",
            time=f"{time.time() - self.start:.2f}",
            best="1" if new_best else "",
            sample_rhyme_density=figures.get("sample_rhyme_density", ""),
            sample_copied_tokens=figures.get("sample_copied_tokens", ""),
        )
        if self.events is not None:
            self.events.scalars(
                step,
                loss=loss,
                avg_loss=avg,
                learning_rate=lr,
                tokens_per_sec=speed,
                loss_scale=float(loss_scale.numpy()),  # read from the device only for TensorBoard
                val_loss=val_loss,
                best_val_loss=None if val_loss is None else best.val_loss,
            )
            if samples is not None:
                self.events.text(step, "samples", samples)
        self.bar.update(1)
        self.bar.set_postfix(
            loss=f"{loss:.3f}",
            avg=f"{avg:.3f}",
            val="-" if self.val_loss is None else f"{self.val_loss:.3f}",
            tok_s=f"{speed:.0f}",
        )
        if cfg.print_every and step % cfg.print_every == 0:
            say(cfg, f"[{step}] loss={loss:.3f} avg={avg:.3f}" + ("" if val_loss is None else f" val={val_loss:.3f}"))
        if new_best and cfg.print_every:
            say(cfg, f"[{step}] new lowest validation loss {val_loss:.4f}: kept as model-best")

    def flush(self) -> None:
        """Write out the buffered events (before a checkpoint is saved and mirrored)."""
        if self.events is not None:
            self.events.flush()

    def close(self) -> None:
        self.bar.close()
        self.log.close()
        if self.events is not None:
            self.events.close()
