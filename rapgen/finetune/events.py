"""TensorBoard: the event files a run writes in `<run>/tensorboard/`, and the notebook cell that shows them.

`EventLog` writes, per step, `loss`, `avg_loss`, `learning_rate`, `tokens_per_sec` and
`loss_scale`; at each validation `val_loss` and `best_val_loss`; and the samples written during
training as text (`samples`). Only TensorFlow's own summary writer is used, with the metadata
TensorBoard's scalar and text dashboards read (TensorBoard 2.21's EventMultiplexer lists these
files' tags under its scalars and text plugins), so writing needs no `tensorboard` package
(Colab has it for viewing). A resumed run appends: events past the step it resumed from
(written after the last checkpoint of a killed run), and a record the kill left half-written,
are first cut from the old files, so every step is in the files once. log.csv stays the plain
record; these are for watching.

>>> events = EventLog("checkpoints/run1/tensorboard", resume_step=0)        # doctest: +SKIP
>>> events.scalars(1, loss=3.2, learning_rate=1e-4)                         # doctest: +SKIP
>>> show_tensorboard("checkpoints")                                         # doctest: +SKIP
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional, Tuple

from rapgen.colab import on_colab
from rapgen.fileio import replacing

FOLDER = "tensorboard"  # inside the run folder
EVENT_GLOB = "events.out.tfevents.*"

# TensorBoard's summary metadata: which dashboard reads a tag, and as what kind of data
# (DataClass 1 is a scalar, 2 a tensor; the plugins' own content protos at version 0 are empty).
_PLUGINS = {"scalars": 1, "text": 2}


def _metadata(plugin: str):
    import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

    meta = tf.compat.v1.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    meta.data_class = _PLUGINS[plugin]
    return meta


def _records(path: str) -> Tuple[List[bytes], bool]:
    """The serialized Event protos of one event file, and whether it ended in a damaged record.

    A writer killed mid-record leaves half a record at the end: TensorFlow's reader raises
    DataLossError there, after every complete record before it.
    """
    import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

    records = []
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:
        return records, True
    return records, False


def trim_events(folder: str, step: int) -> int:
    """Cut the events past `step`, and a half-written last record, out of every event file in
    `folder` (each file rewritten atomically, only when it holds either); returns how many
    events were cut."""
    import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

    cut = 0
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), EVENT_GLOB))):
        records, damaged = _records(path)
        keep = [r for r in records if tf.compat.v1.Event.FromString(r).step <= step]
        if len(keep) == len(records) and not damaged:
            continue
        cut += len(records) - len(keep)
        with replacing(path) as tmp:
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in keep:
                    writer.write(record)
    return cut


class EventLog:
    """TensorBoard event files of one training session, appended to the run's earlier ones.

    >>> events = EventLog("checkpoints/run1/tensorboard", resume_step=400)    # doctest: +SKIP
    >>> events.scalars(401, loss=2.9, tokens_per_sec=5120.0)                  # doctest: +SKIP
    >>> events.text(401, "samples", "<<Lil Tofu - Soy Drip>> …")              # doctest: +SKIP
    >>> events.close()                                                        # doctest: +SKIP
    """

    def __init__(self, folder: str, resume_step: int):
        import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

        self.folder = folder
        if os.path.isdir(folder):
            trim_events(folder, resume_step)
        # Flushed at every checkpoint (`flush`), so the files reach the Drive mirror with it.
        self.writer = tf.summary.create_file_writer(folder)
        self.scalar_meta, self.text_meta = _metadata("scalars"), _metadata("text")
        self._writers = {}  # tags (a tuple) -> the compiled function writing them

    def _scalar_writer(self, tags: Tuple[str, ...]):
        """One compiled call per step for these tags: about half the time of one eager write per tag
        (bench/bench_events.py: 1.3 ms against 2.7 ms per step for five tags, loaded 2-core CPU)."""
        import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

        if tags not in self._writers:
            writer, meta = self.writer, self.scalar_meta

            @tf.function(
                input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([len(tags)], tf.float32)], autograph=False
            )
            def write(step, values):  # values: [len(tags)] float32
                with writer.as_default():
                    for i, tag in enumerate(tags):
                        tf.summary.write(tag, values[i], step=step, metadata=meta)

            self._writers[tags] = write
        return self._writers[tags]

    def scalars(self, step: int, **values: Optional[float]) -> None:
        """One point per named value at `step` (None: none), e.g. `scalars(10, loss=3.1, val_loss=None)`."""
        import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

        given = {tag: float(value) for tag, value in values.items() if value is not None}
        if given:
            write = self._scalar_writer(tuple(given))
            write(tf.constant(step, tf.int64), tf.constant(list(given.values()), tf.float32))

    def text(self, step: int, tag: str, text: str) -> None:
        """Text at `step`, shown as Markdown by TensorBoard's text dashboard."""
        import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

        with self.writer.as_default():
            tf.summary.write(tag, tf.constant(text), step=step, metadata=self.text_meta)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_events(folder: str) -> Dict[str, List[Tuple[int, object]]]:
    """Every tag's (step, value) pairs from the event files in `folder`, in file order (a float,
    or str for text): what TensorBoard would plot.

    >>> read_events("checkpoints/run1/tensorboard")["loss"][:2]                # doctest: +SKIP
    [(1, 10.83), (2, 10.41)]
    """
    import tensorflow as tf  # lazily: the notebook and CLI import this module without TensorFlow

    out: Dict[str, List[Tuple[int, object]]] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), EVENT_GLOB))):
        for record in _records(path)[0]:  # a half-written last record is left out, as TensorBoard does
            event = tf.compat.v1.Event.FromString(record)
            for value in event.summary.value:
                item = tf.make_ndarray(value.tensor).item()
                out.setdefault(value.tag, []).append(
                    (event.step, item.decode("utf-8") if isinstance(item, bytes) else item)
                )
    return out


def show_tensorboard(logdir: str = "checkpoints") -> None:
    """The notebook's TensorBoard cell: on Colab, `%load_ext tensorboard` and `%tensorboard --logdir
    LOGDIR` (live charts of every run under it); elsewhere a line saying how to open it.

    >>> show_tensorboard("checkpoints")                                       # doctest: +SKIP
    """
    shell = None
    if on_colab():
        try:
            from IPython import get_ipython  # Colab's kernel: not a dependency of rapgen
        except ImportError:
            get_ipython = None
        shell = get_ipython() if get_ipython else None
    if shell is None:
        # Headless (CI) and plain Jupyter: starting a server from here would outlive the notebook.
        print(
            f"TensorBoard: run `tensorboard --logdir {logdir}` and open http://localhost:6006 "
            f"(on Colab this cell shows it here); every run's log.csv holds the same figures"
        )
        return
    shell.run_line_magic("load_ext", "tensorboard")
    shell.run_line_magic("tensorboard", f"--logdir {logdir}")
