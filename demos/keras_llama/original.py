"""A small Llama written in Keras 3 on the JAX backend: the original of `ported.py`.

Random weights from a fixed seed, nothing downloaded. The backend is chosen here, before keras
is imported, as a Keras script does; tracetui never imports keras itself before the script, so
this choice holds whatever `KERAS_BACKEND` says in the environment. Layers are named by their
Keras paths (`decoder_block_0.attention.query`, ...); the rotary embedding and the attention
arithmetic are written inline.

tracetui calls the model with `training=False` (Keras's inference mode).
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402  (the backend must be chosen first)
import numpy  # noqa: E402
from keras import ops  # noqa: E402

VOCAB_SIZE = 96
HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 4
RMS_NORM_EPS = 1e-6
ROPE_THETA = 10000.0


class RMSNorm(keras.layers.Layer):
    def __init__(self, epsilon: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape) -> None:
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, hidden_states):
        variance = ops.mean(ops.square(hidden_states), axis=-1, keepdims=True)
        return self.scale * (hidden_states * ops.rsqrt(variance + self.epsilon))


def rotate_half(tensor):
    first, second = ops.split(tensor, 2, axis=-1)
    return ops.concatenate([-second, first], axis=-1)


class Attention(keras.layers.Layer):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.head_dim = HIDDEN_SIZE // NUM_HEADS
        self.query = keras.layers.Dense(HIDDEN_SIZE, use_bias=False, name="query")
        self.key = keras.layers.Dense(HIDDEN_SIZE, use_bias=False, name="key")
        self.value = keras.layers.Dense(HIDDEN_SIZE, use_bias=False, name="value")
        self.attention_output = keras.layers.Dense(HIDDEN_SIZE, use_bias=False, name="attention_output")

    def call(self, hidden_states):
        batch, length = ops.shape(hidden_states)[0], ops.shape(hidden_states)[1]

        def heads(tensor):  # (batch, length, hidden) -> (batch, heads, length, head_dim)
            return ops.transpose(ops.reshape(tensor, (batch, length, NUM_HEADS, self.head_dim)), (0, 2, 1, 3))

        query, key, value = heads(self.query(hidden_states)), heads(self.key(hidden_states)), heads(self.value(hidden_states))
        inverse_frequencies = 1.0 / (ROPE_THETA ** (ops.arange(0, self.head_dim, 2, dtype="float32") / self.head_dim))
        angles = ops.arange(length, dtype="float32")[:, None] * inverse_frequencies[None, :]
        angles = ops.concatenate([angles, angles], axis=-1)
        cos, sin = ops.cos(angles), ops.sin(angles)
        query = query * cos + rotate_half(query) * sin
        key = key * cos + rotate_half(key) * sin
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) / ops.sqrt(float(self.head_dim))
        causal = ops.tril(ops.ones((length, length), dtype="bool"))
        scores = ops.where(causal, scores, -1e9)
        weights = ops.softmax(scores, axis=-1)
        attended = ops.reshape(ops.transpose(ops.matmul(weights, value), (0, 2, 1, 3)), (batch, length, HIDDEN_SIZE))
        return self.attention_output(attended)


class FeedForward(keras.layers.Layer):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gate_dense = keras.layers.Dense(INTERMEDIATE_SIZE, use_bias=False, name="gate_dense")
        self.up_dense = keras.layers.Dense(INTERMEDIATE_SIZE, use_bias=False, name="up_dense")
        self.down_dense = keras.layers.Dense(HIDDEN_SIZE, use_bias=False, name="down_dense")

    def call(self, hidden_states):
        return self.down_dense(ops.silu(self.gate_dense(hidden_states)) * self.up_dense(hidden_states))


class DecoderBlock(keras.layers.Layer):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pre_attention_norm = RMSNorm(RMS_NORM_EPS, name="pre_attention_norm")
        self.attention = Attention(name="attention")
        self.pre_ffw_norm = RMSNorm(RMS_NORM_EPS, name="pre_ffw_norm")
        self.ffw = FeedForward(name="ffw")

    def call(self, hidden_states):
        hidden_states = hidden_states + self.attention(self.pre_attention_norm(hidden_states))
        return hidden_states + self.ffw(self.pre_ffw_norm(hidden_states))


class Llama(keras.Model):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.token_embedding = keras.layers.Embedding(VOCAB_SIZE, HIDDEN_SIZE, name="token_embedding")
        self.decoder_blocks = [DecoderBlock(name=f"decoder_block_{index}") for index in range(NUM_LAYERS)]
        self.final_norm = RMSNorm(RMS_NORM_EPS, name="final_norm")
        self.lm_head = keras.layers.Dense(VOCAB_SIZE, use_bias=False, name="lm_head")

    def call(self, token_ids, training=None):
        hidden_states = self.token_embedding(token_ids)
        for block in self.decoder_blocks:
            hidden_states = block(hidden_states)
        return self.lm_head(self.final_norm(hidden_states))


def build_model() -> tuple[Llama, numpy.ndarray]:
    """The model with its random weights (seed 0, and each norm's scale drawn too) and a batch of token ids."""
    keras.utils.set_random_seed(0)
    model = Llama(name="llama")
    token_ids = numpy.array([[5, 17, 42, 8, 91, 23, 64, 2, 77, 31]], dtype="int32")
    model(token_ids)  # builds the weights
    generator = numpy.random.default_rng(0)
    for layer in model._flatten_layers():
        if isinstance(layer, RMSNorm):  # not all ones, so that a norm's weight is checked too
            layer.scale.assign(1.0 + 0.1 * generator.standard_normal(HIDDEN_SIZE).astype("float32"))
    return model, token_ids


def build():
    return build_model()
