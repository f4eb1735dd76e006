"""The TF1 side of the checkpoint tests: GPT-2's variables built in a `tf.compat.v1` graph under
OpenAI's variable scopes, and a `tf.compat.v1.train.Saver` restore, as nshepperd/gpt-2 and
gpt-2-simple read and write checkpoints."""

import tensorflow as tf


def tf1_gpt2_variables(hp):
    """GPT-2's variables in the current graph, created under scopes as OpenAI's model.py does."""
    v1 = tf.compat.v1
    E = hp.n_embd
    made = []

    def var(name, shape):
        made.append(v1.get_variable(name, shape, initializer=v1.zeros_initializer()))

    with v1.variable_scope("model"):
        var("wpe", [hp.n_ctx, E])
        var("wte", [hp.n_vocab, E])
        for i in range(hp.n_layer):
            with v1.variable_scope(f"h{i}"):
                for ln in ("ln_1", "ln_2"):
                    with v1.variable_scope(ln):
                        var("g", [E])
                        var("b", [E])
                with v1.variable_scope("attn"):
                    for scope, n_in, n_out in (("c_attn", E, 3 * E), ("c_proj", E, E)):
                        with v1.variable_scope(scope):
                            var("w", [1, n_in, n_out])
                            var("b", [n_out])
                with v1.variable_scope("mlp"):
                    for scope, n_in, n_out in (("c_fc", E, 4 * E), ("c_proj", 4 * E, E)):
                        with v1.variable_scope(scope):
                            var("w", [1, n_in, n_out])
                            var("b", [n_out])
        with v1.variable_scope("ln_f"):
            var("g", [E])
            var("b", [E])
    return made


def tf1_restore(model_dir, hp):
    """Restore a model directory the way gpt-2-simple does; returns name -> value."""
    graph = tf.Graph()
    with graph.as_default():
        variables = tf1_gpt2_variables(hp)
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            prefix = tf.train.latest_checkpoint(model_dir)  # resolves the index's relative path
            assert prefix is not None
            saver.restore(sess, prefix)
            return {v.op.name: value for v, value in zip(variables, sess.run(variables))}
