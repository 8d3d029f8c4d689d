"""TensorFlow-side helpers: Magenta's h512_bo16 graph written from DESIGN.md / the paper in TF ops, saved with
TensorFlow's own Saver so the files are the real V2 format."""
from __future__ import annotations

import numpy as np

HOP = 512


def magenta_names(enc_layers, enc_ch, dec_layers, dec_ch, skip, bottleneck=16, quant=256, k=3):
    """DESIGN.md's variable list: conv name -> kernel shape [1, k, in, out] (each also has biases [out])."""
    names = {"ae_startconv": (1, k, 1, enc_ch)}
    for i in range(1, enc_layers + 1):
        names[f"ae_dilatedconv_{i}"] = (1, k, enc_ch, enc_ch)
        names[f"ae_res_{i}"] = (1, 1, enc_ch, enc_ch)
    names["ae_bottleneck"] = (1, 1, enc_ch, bottleneck)
    names["startconv"] = (1, k, 1, dec_ch)
    names["skip_start"] = (1, 1, dec_ch, skip)
    for i in range(1, dec_layers + 1):
        names[f"dilatedconv_{i}"] = (1, k, dec_ch, 2 * dec_ch)
        names[f"cond_map_{i}"] = (1, 1, bottleneck, 2 * dec_ch)
        names[f"res_{i}"] = (1, 1, dec_ch, dec_ch)
        names[f"skip_{i}"] = (1, 1, dec_ch, skip)
    names["out1"] = (1, 1, skip, skip)
    names["cond_map_out1"] = (1, 1, bottleneck, skip)
    names["logits"] = (1, 1, skip, quant)
    return names


def random_weights(names, seed=0):
    """name/W and name/biases -> float32 arrays, scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in names.items():
        out[f"{name}/W"] = (rng.standard_normal(shape) / np.sqrt(shape[1] * shape[2])).astype(np.float32)
        out[f"{name}/biases"] = (0.1 * rng.standard_normal(shape[-1])).astype(np.float32)
    return out


def save_v2(tf, prefix, tensors):
    """Write a V2 checkpoint holding exactly `tensors` (name -> array) with TensorFlow's SaveV2 op."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return str(prefix)


class MagentaGraph:
    """Magenta's h512_bo16 forward pass (Engel et al. 2017; DESIGN.md) in TF1-style graph ops, at any size.

    Every convolution creates `<name>/W` [1, k, in, out] and `<name>/biases` like Magenta's masked.conv1d and
    applies kernel index j to tap t-(k-1-j)·d (causal) or t+(j-1)·d (non-causal), zero padded."""

    def __init__(self, tf, *, enc_layers, enc_ch, dec_layers, dec_ch, skip, stack, batch, length, scope="",
                 seed=0):
        self.tf = tf
        v1 = tf.compat.v1
        self.graph = tf.Graph()
        self.weights = random_weights(magenta_names(enc_layers, enc_ch, dec_layers, dec_ch, skip), seed)
        with self.graph.as_default():
            self.codes = v1.placeholder(tf.int64, [batch, length])
            with v1.variable_scope(scope or v1.get_variable_scope()):
                self._build(enc_layers, enc_ch, dec_layers, dec_ch, skip, stack)
            self.variables = v1.trainable_variables()
            step = v1.train.get_or_create_global_step()
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=self.codes + 128, logits=self.logits))
            self.train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=step)
            self.ema = v1.train.ExponentialMovingAverage(0.5)
            with tf.control_dependencies([self.train_op]):
                self.ema_op = self.ema.apply(self.variables)
            self.saver = v1.train.Saver()
            self.init = v1.global_variables_initializer()
        self.sess = v1.Session(graph=self.graph)
        self.sess.run(self.init)

    def _conv(self, x, name, k, out, dilation=1, causal=True):
        tf, v1 = self.tf, self.tf.compat.v1
        with v1.variable_scope(name):
            w = v1.get_variable("W", initializer=self.weights[f"{name}/W"])
            b = v1.get_variable("biases", initializer=self.weights[f"{name}/biases"])
        assert w.shape[1] == k and w.shape[3] == out
        span = (k - 1) * dilation
        pad = [span, 0] if causal else [span // 2, span // 2]
        x = tf.pad(x, [[0, 0], pad, [0, 0]])
        return tf.nn.convolution(x, w[0], padding="VALID", dilations=[dilation]) + b

    def _build(self, enc_layers, enc_ch, dec_layers, dec_ch, skip, stack):
        tf = self.tf
        x = tf.expand_dims(tf.cast(self.codes, tf.float32) / 128.0, 2)
        # Non-causal encoder.
        en = self._conv(x, "ae_startconv", 3, enc_ch, causal=False)
        for i in range(enc_layers):
            d = tf.nn.relu(en)
            d = tf.nn.relu(self._conv(d, f"ae_dilatedconv_{i + 1}", 3, enc_ch, 2 ** (i % stack), causal=False))
            en += self._conv(d, f"ae_res_{i + 1}", 1, enc_ch)
        en = self._conv(en, "ae_bottleneck", 1, 16)
        self.embeddings = tf.nn.avg_pool1d(en, HOP, HOP, "VALID")

        def held(c):  # one value per frame, held over its HOP samples
            return tf.repeat(c, HOP, axis=1)

        # Causal decoder on the input shifted right by one sample.
        l = tf.pad(x, [[0, 0], [1, 0], [0, 0]])[:, :-1]
        l = self._conv(l, "startconv", 3, dec_ch)
        s = self._conv(l, "skip_start", 1, skip)
        for i in range(dec_layers):
            d = self._conv(l, f"dilatedconv_{i + 1}", 3, 2 * dec_ch, 2 ** (i % stack))
            d += held(self._conv(self.embeddings, f"cond_map_{i + 1}", 1, 2 * dec_ch))
            d = tf.sigmoid(d[:, :, :dec_ch]) * tf.tanh(d[:, :, dec_ch:])
            l += self._conv(d, f"res_{i + 1}", 1, dec_ch)
            s += self._conv(d, f"skip_{i + 1}", 1, skip)
        s = self._conv(tf.nn.relu(s), "out1", 1, skip)
        s = tf.nn.relu(s + held(self._conv(self.embeddings, "cond_map_out1", 1, skip)))
        self.logits = self._conv(s, "logits", 1, 256)

    def train_step(self, codes):
        """One Adam step (creating real optimizer slots) plus a moving-average update."""
        self.sess.run(self.ema_op, {self.codes: codes})

    def forward(self, codes):
        return self.sess.run([self.embeddings, self.logits], {self.codes: codes})

    def save(self, path):
        with self.graph.as_default():
            step = self.sess.run(self.tf.compat.v1.train.get_global_step())
            return self.saver.save(self.sess, str(path), global_step=int(step))

    def use_moving_averages(self):
        """Load every variable's moving average into the variable itself."""
        with self.graph.as_default():
            shadows = self.sess.run([self.ema.average(v) for v in self.variables])
            for v, value in zip(self.variables, shadows):
                v.load(value, self.sess)
