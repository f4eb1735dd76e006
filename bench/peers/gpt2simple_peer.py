"""gpt-2-simple 0.8.1's side of bench/compare.py; runs in bench/.venvs/gpt2simple.

gpt-2-simple is TF1 code (tf.compat.v1 graph mode, eager execution switched off on import).
It reads rapgen's model folders as they are: they are OpenAI's checkpoint format, and
`model_dir/model_name` is where gpt-2-simple looks for a base model.

Tasks (one per process, each prints one RESULT line):
  check   gpt-2-simple's load_gpt2() restores the checkpoint; its model() graph computes logits
          for the reference ids, compared with rapgen's.
  train   gpt_2_simple.finetune(accumulate_gradients=1, batch_size=1) on the invented lyrics.
          Each training step is one Session.run of (apply, loss, summary); those calls are timed
          by wrapping the session's run method, so graph construction, the checkpoint restore
          and the final save are outside the figures. The first step (Grappler optimises the
          graph then) and `warmup` more are dropped.
  sample  gpt_2_simple.generate() twice with the same arguments; the second ("warm") call is
          the figure. Each call builds a new sampling graph (a while_loop over model() with
          AUTO_REUSE variables) before running it, so a warm call still pays graph building
          and a first Session.run of new ops; `run_s` is the part spent in Session.run. Then,
          as a lower bound, the op of one sample_sequence() graph is run twice and the second
          run timed (`graph_reused_s`): what a user who builds the graph once would get.
  cold    a user's script: import gpt_2_simple, start a session, load_gpt2(), generate() 32
          tokens; compare.py times the whole process.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import common  # noqa: E402
from common import Timer  # noqa: E402

MODELS = os.path.join(common.WORK, "models")


def versions() -> dict:
    import importlib.metadata

    import tensorflow as tf

    return {"tf": tf.__version__, "gpt_2_simple": importlib.metadata.version("gpt_2_simple")}


def timed_session(gpt2, times: list, want):
    """A session whose run() appends the seconds of each call for which want(fetches, kwargs) holds."""
    sess = gpt2.start_tf_sess()
    run = sess.run

    def timed_run(fetches, *args, **kwargs):
        t = Timer()
        with t:
            out = run(fetches, *args, **kwargs)
        if want(fetches, kwargs):
            times.append(t.s)
        return out

    sess.run = timed_run
    return sess


def check(spec: dict) -> dict:
    import gpt_2_simple as gpt2
    import numpy as np
    import tensorflow as tf
    from gpt_2_simple.src import model

    size = spec["size"]
    ref = np.load(common.reference_npz(size))
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name=size, model_dir=MODELS)
    hparams = model.default_hparams()
    hparams.override_from_dict(common.SIZES[size])
    ids = tf.compat.v1.placeholder(tf.int32, [1, None])
    logits = model.model(hparams=hparams, X=ids, reuse=True)["logits"]
    got = sess.run(logits, feed_dict={ids: ref["ids"]})
    return {
        "max_abs_diff": float(np.max(np.abs(got - ref["logits"]))),
        "logit_scale": float(np.max(np.abs(ref["logits"]))),
        **versions(),
    }


def train(spec: dict) -> dict:
    import gpt_2_simple as gpt2

    times = []
    # The training step's fetches are the tuple (opt_apply, loss, summary_loss) with a feed_dict.
    sess = timed_session(
        gpt2,
        times,
        lambda fetches, kw: isinstance(fetches, tuple) and len(fetches) == 3 and kw.get("feed_dict") is not None,
    )
    n = 1 + spec["warmup"] + spec["steps"]
    with tempfile.TemporaryDirectory(prefix="gpt2simple-bench-") as tmp:
        with Timer() as total:
            gpt2.finetune(
                sess,
                common.DATASET,
                steps=n,
                model_name=spec["size"],
                model_dir=MODELS,
                batch_size=1,
                accumulate_gradients=1,
                learning_rate=1e-4,
                restore_from="fresh",
                run_name="bench",
                checkpoint_dir=tmp,
                sample_every=10**9,
                save_every=10**9,
                print_every=1,
                optimizer="adam",
            )
    if len(times) != n:
        raise RuntimeError(f"expected {n} timed training steps, saw {len(times)}")
    step_s = times[1 + spec["warmup"] :]
    return {
        "first_step_s": times[0],
        "finetune_call_s": total.s,
        **common.summarize_steps(step_s, common.BATCH * common.LENGTH),
        **versions(),
    }


def sample(spec: dict) -> dict:
    import gpt_2_simple as gpt2
    import numpy as np
    import tensorflow as tf
    from gpt_2_simple.src import encoder, model
    from gpt_2_simple.src import sample as gsample

    size, batch, length = spec["size"], spec["batch"], spec["length"]
    run_times = []
    sess = timed_session(gpt2, run_times, lambda fetches, kw: kw.get("feed_dict") is not None)
    with Timer() as load:
        gpt2.load_gpt2(sess, model_name=size, model_dir=MODELS)
    kwargs = dict(
        model_name=size,
        model_dir=MODELS,
        prefix=common.PROMPT,
        length=length,
        nsamples=batch,
        batch_size=batch,
        temperature=1.0,
        top_k=40,
        return_as_list=True,
    )
    calls = []
    for seed in range(1 + spec["warm_runs"]):
        with Timer() as t:
            texts = gpt2.generate(sess, seed=seed + 1, **kwargs)
        assert len(texts) == batch
        calls.append(t.s)
    warm = calls[1:]
    best = min(warm)
    # The sampling op of one graph, run again: no graph building, no first-run set-up.
    enc = encoder.get_encoder(os.path.join(MODELS, size))
    hparams = model.default_hparams()
    hparams.override_from_dict(common.SIZES[size])
    context = tf.compat.v1.placeholder(tf.int32, [batch, None])
    op = gsample.sample_sequence(
        hparams=hparams, length=length, context=context, batch_size=batch, temperature=1.0, top_k=40
    )
    feed = {context: np.array(batch * [enc.encode(common.PROMPT)], np.int32)}
    sess.run(op, feed_dict=feed)
    with Timer() as reused:
        out = sess.run(op, feed_dict=feed)
    assert out.shape[1] == len(enc.encode(common.PROMPT)) + length
    return {
        "load_s": load.s,
        "first_s": calls[0],
        "warm_s": warm,
        "best_s": best,
        "run_s": run_times[1 + warm.index(best)],
        "graph_reused_s": reused.s,
        "tokens_per_s": batch * length / best,
        "graph_reused_tokens_per_s": batch * length / reused.s,
        **versions(),
    }


def cold(spec: dict) -> dict:
    import gpt_2_simple as gpt2

    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name=spec["size"], model_dir=MODELS)
    texts = gpt2.generate(
        sess,
        model_name=spec["size"],
        model_dir=MODELS,
        prefix=common.PROMPT,
        length=spec["length"],
        temperature=1.0,
        top_k=40,
        seed=1,
        return_as_list=True,
    )
    print(texts[0])
    return versions()


if __name__ == "__main__":
    common.run_task({"check": check, "train": train, "sample": sample, "cold": cold})
