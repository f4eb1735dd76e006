"""Songs longer than the context (issue 12, part 4): `window="slide"`.

A model of n_ctx 32 writes 100+ tokens. A subclass records every position the network is
fed (inside the compiled loop, through a py_function), so the test sees that positions
never reach n_ctx; the loop's calls are counted to see one cache rebuild per slide; the
greedy text equals a reference that re-runs the whole kept window at every token; and each
row of a batch keeps its own header line.
"""

import numpy as np
import pytest
import tensorflow as tf

from rapgen.errors import RapgenError
from rapgen.model.gpt2 import GPT2, initial_weights
from rapgen.model.hparams import HParams
from rapgen.write.generation import generate, header_length

N_CTX = 32
NEWLINE = 198  # a token id standing for "holds a newline" in these tests


class PositionRecorder(GPT2):
    """GPT2 that records the largest position of every call, from inside the compiled loop."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.largest = []

    def _record(self, positions):
        self.largest.append(int(np.max(positions.numpy())))
        return positions

    def _check_inputs(self, tokens, past_length, pad=None):
        tokens, positions = super()._check_inputs(tokens, past_length, pad)
        recorded = tf.py_function(self._record, [positions], tf.int32)
        recorded.set_shape(positions.shape)
        return tokens, recorded


@pytest.fixture(scope="module")
def shared_model():
    hp = HParams(n_vocab=400, n_ctx=N_CTX, n_embd=32, n_head=2, n_layer=2)
    values = initial_weights(hp, seed=8)
    for name, value in values.items():
        if name.endswith("/w") or name in ("model/wte", "model/wpe"):
            values[name] = value * 40.0  # context and position change the greedy choices
    return PositionRecorder(hp, weights=values)


@pytest.fixture()
def model(shared_model):
    """The module's model (its loop compiled once) with a fresh record of positions."""
    shared_model.largest.clear()
    return shared_model


def count_loop_calls(model):
    """Wrap the compiled loop: records (width of the context fed, its pads, new tokens asked)."""
    from rapgen.write.generation import _generation_function

    loop = _generation_function(model)
    calls = []

    def counting(context, pad, row_ids, done, length, *rest):
        calls.append((context.numpy().tolist(), pad.numpy().tolist(), int(length)))
        return loop(context, pad, row_ids, done, length, *rest)

    model.generation.function = counting
    return calls


def sliding_reference(model, prompt, length, first_chunk, stride, header_ids):
    """Greedy tokens re-running the kept window through `model(...)` at every step, sliding
    after `first_chunk` tokens and then every `stride`."""
    forward = tf.function(lambda tokens: model(tokens)[0, -1], input_signature=[tf.TensorSpec([1, None], tf.int32)])
    window, out, chunk = list(prompt), [], first_chunk
    while True:
        for _ in range(min(chunk, length - len(out))):
            token = int(np.argmax(forward(tf.constant([window], tf.int32)).numpy()))
            window.append(token)
            out.append(token)
        if len(out) >= length:
            return out
        keep = N_CTX - stride
        head = header_length(window, len(prompt), header_ids, keep // 2)
        window, chunk = window[:head] + window[len(window) - (keep - head) :], stride


def test_a_long_song_slides_and_positions_stay_below_n_ctx(model):
    prompt = [7, 11, 13]
    calls = count_loop_calls(model)
    rows = generate(model, prompt, length=120, temperature=0.0, stop_at_end=False, window="slide", stride=8)
    assert len(rows[0]) == 120
    # 29 tokens fill the context; then 8 per slide: 1 + ceil(91 / 8) = 13 passes, each one cache rebuild.
    assert len(calls) == 13
    assert [c[2] for c in calls] == [29] + [8] * 11 + [3]
    assert all(len(c[0][0]) + c[2] <= N_CTX for c in calls)
    assert max(model.largest) == N_CTX - 2 and min(model.largest) >= 0  # the last token chosen is never fed
    # Without header ids a slide keeps the prompt as the header, then the latest tokens.
    for context, _, _ in calls[1:]:
        assert context[0][:3] == prompt and len(context[0]) == N_CTX - 8
    assert rows[0] == sliding_reference(model, prompt, 120, 29, 8, None)
    assert len(set(rows[0][60:])) > 5  # still choosing by context after many slides


def test_rows_of_a_batch_slide_on_their_own_schedule_and_keep_their_header_lines(model):
    prompts = [[5, 40, 41, NEWLINE, 90], [6, 50, 51, 52, 53, 54, NEWLINE]]  # header lines of 4 and 7 tokens
    header_ids = frozenset([NEWLINE])
    options = dict(length=100, temperature=0.0, stop_at_end=False, window="slide", header_ids=header_ids)  # stride 8
    calls = count_loop_calls(model)
    rows = generate(model, prompts, **options)
    for context, pad, _ in calls:
        for tokens, filler in zip(context, pad):
            real = tokens[filler:]
            assert real[:4] == prompts[0][:4] or real[:7] == prompts[1]  # every row fed keeps its header
    for row, prompt in zip(rows, prompts):
        # A row slides when its own context is full, as it does alone: first after N_CTX - len(prompt).
        assert row == sliding_reference(model, prompt, 100, N_CTX - len(prompt), 8, header_ids)
        assert row == generate(model, prompt, **options)[0]
    assert max(model.largest) < N_CTX


def test_without_a_length_each_row_writes_to_the_end_of_its_own_context(model):
    prompts = [[5, 40], [6, 50, 51, 52, 53, 54, 55, 56, 57]]
    rows = generate(model, prompts, temperature=0.0, stop_at_end=False)
    assert [len(r) for r in rows] == [N_CTX - 2, N_CTX - 9]  # a shorter prompt writes more, as alone
    for row, prompt in zip(rows, prompts):
        assert row == generate(model, prompt, temperature=0.0, stop_at_end=False)[0]
    assert max(model.largest) < N_CTX
    with pytest.raises(RapgenError, match="--window slide writes past the context as far as --length"):
        generate(model, prompts, window="slide")


def test_header_length_ends_at_the_first_newline_after_the_start():
    ids = frozenset([NEWLINE])
    assert header_length([1, 2, NEWLINE, 4, NEWLINE], 2, ids, 10) == 3
    assert header_length([NEWLINE, 2, 3, NEWLINE], 2, ids, 10) == 4  # the separator's own token is not the end
    assert header_length([1, 2, 3, 4, 5], 2, ids, 10) == 2  # no line ended: the prompt
    assert header_length([1, 2, 3, 4, 5, NEWLINE], 2, ids, 4) == 2  # too long: the prompt, within the limit
    assert header_length([1, 2, 3, 4, 5], 6, None, 4) == 4


def test_without_slide_a_long_length_says_what_fits_and_names_the_window(model):
    with pytest.raises(RapgenError, match=r"--length 29 or less, or --window slide"):
        generate(model, [1, 2, 3], length=30)
    with pytest.raises(RapgenError, match="--stride"):
        generate(model, [1, 2, 3], length=60, window="slide", stride=N_CTX)  # over half the context
    with pytest.raises(RapgenError, match="--window"):
        generate(model, [1, 2, 3], length=10, window="wide")


def test_sample_writes_past_the_context_with_its_header(tiny_model_dir):
    from rapgen.write.songs import sample

    text = sample(
        model=tiny_model_dir,
        artist="Lil Tofu",
        length=200,
        seed=2,
        stop_at_end=False,
        quiet=True,
        window="slide",
        stride=64,
    )[0]
    assert text.startswith("<<Lil Tofu")
    with pytest.raises(RapgenError, match="--window slide"):
        sample(model=tiny_model_dir, artist="Lil Tofu", length=300, quiet=True)
    with pytest.raises(RapgenError, match="--stride 5 only matters with --window slide"):
        sample(model=tiny_model_dir, artist="Lil Tofu", length=30, stride=5, quiet=True)
