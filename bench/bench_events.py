"""Benchmark of TensorBoard event writing: what `rapgen.finetune.events.EventLog` adds to each training step.

    python bench/bench_events.py                 # 2000 steps of the five per-step scalars
    python bench/bench_events.py --steps 500

Writes the scalars a training step writes (loss, avg_loss, learning_rate, tokens_per_sec,
loss_scale) for `--steps` steps two ways into a temporary folder: one eager `tf.summary.write`
per tag (the plain way), and `EventLog.scalars` (one compiled call per step), and prints the
milliseconds per step of each, then the CPU and the load average, since the figures move with both.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()

    import tensorflow as tf

    from rapgen.finetune.events import EventLog, _metadata

    values = dict(loss=3.2, avg_loss=3.3, learning_rate=1e-4, tokens_per_sec=5000.0, loss_scale=1.0)
    with tempfile.TemporaryDirectory() as folder:
        writer, meta = tf.summary.create_file_writer(os.path.join(folder, "eager")), _metadata("scalars")

        def eager(step):
            with writer.as_default():
                for tag, value in values.items():
                    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=meta)

        events = EventLog(os.path.join(folder, "compiled"), resume_step=0)
        for name, write in (
            ("eager, one write per tag", eager),
            ("EventLog.scalars", lambda s: events.scalars(s, **values)),
        ):
            write(0)  # the first call traces
            start = time.perf_counter()
            for step in range(1, args.steps + 1):
                write(step)
            elapsed = time.perf_counter() - start
            print(f"{name:26s} {1000 * elapsed / args.steps:6.3f} ms per step ({args.steps} steps, 5 scalars)")
        writer.close()
        events.close()
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}; TensorFlow {tf.__version__}"
    )


if __name__ == "__main__":
    main()
