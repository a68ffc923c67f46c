#!/usr/bin/env python3
"""The seed network in TensorFlow 2 on the CPU, as the yardstick for `trainer bench --device cpu`.

The same network, loss and optimizer as trainer/src/model.rs and scripts/torch_seed.py (see
/work/shared/SPEC.md), at the sizes of `trainer bench --preset`:

    conv_block(cout)  = BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 (no bias, SAME)
    residual block    : h1 = ReLU(conv_block(x)); h2 = conv_block(h1);
                        y = maxpool3x3/2 SAME(DropBlock5(ReLU(h1 + h2)))
    presets (widths; FC features): seed 128/256/512/1024, 4096; small 32/64/128/256, 512;
    tiny 8/16/32/64, 128; then FC -> BN -> ReLU -> dropout twice, FC 100 -> BN (no biases),
    mean softmax cross-entropy, gradients clipped to global norm 100, Adam lr 5e-4.

`--precision bf16` is Keras' "mixed_bfloat16" policy, the counterpart of `trainer bench --precision
bf16`: layers compute in BF16 (oneDNN's AVX-512 BF16 kernels where the CPU has them) on FP32
variables, the logits cast back to FP32 for the loss.

DropBlock runs at the keep probability `trainer bench` uses (the second epoch's, 0.995, masks
drawn), dropout 0.5 is active. TensorFlow's CPU build runs its convolutions through oneDNN, NHWC.
One traced `tf.function` step (forward, loss, backward, clip, update); `--warmup` untimed steps,
then `--steps` timed one by one. The output line has the form of `trainer bench`'s:

    training: 3 steps, median 5.123 s each, 12.5 images/s

    python3 scripts/tf_seed.py --preset small --batch-size 250 --steps 5
    python3 scripts/tf_seed.py --preset small --batch-size 250 --precision bf16
    python3 scripts/tf_seed.py --self-test          # the pure-Python parts, no TensorFlow needed

Differences that do not change the cost: Keras' Adam (epsilon added to sqrt(v_hat)) where the
seed uses TensorFlow 1's form, and Glorot-uniform initial weights.
"""

import argparse
import os
import statistics
import sys
import time

PRESETS = {
    "seed": ((128, 256, 512, 1024), 4096),
    "small": ((32, 64, 128, 256), 512),
    "tiny": ((8, 16, 32, 64), 128),
}
CLASSES = 100
BLOCK = 5
KEEP = 0.995
DROPOUT_RATE = 0.5
BN_EPS = 1e-5
# Keras' momentum weighs the running statistic: the seed's 0.997.
BN_MOMENTUM = 0.997
LR = 5e-4
CLIP = 100.0
SIDE = 32


def expected_params(widths, hidden, classes=CLASSES, channels=3):
    """Trainable values (convolutions, FC weights, BN scales and shifts); the seed: 77,791,822."""

    def conv_block(cin, cout):
        return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout

    total, cin = 0, channels
    for w in widths:
        total += conv_block(cin, w) + conv_block(w, w)
        cin = w
    side = SIDE
    for _ in widths:
        side = -(-side // 2)
    flat = cin * side * side
    total += flat * hidden + 2 * hidden + hidden * hidden + 2 * hidden
    return total + hidden * classes + 2 * classes


def dropblock_gamma(h, w, block=BLOCK, keep=KEEP):
    """Bernoulli rate of block centres, per SPEC.md."""
    return (1 - keep) * (w * h) / block**2 / ((w - block + 1) * (h - block + 1))


def summary(what, units, times_s, batch):
    """The line `trainer bench` prints: images/s over all runs, and the median run."""
    ips = len(times_s) * batch / sum(times_s)
    return (f"{what}: {len(times_s)} {units}, median {statistics.median(times_s):.3f} s each, "
            f"{ips:.1f} images/s")


def self_test():
    assert expected_params(*PRESETS["seed"]) == 77_791_822
    assert expected_params(*PRESETS["small"]) == 3_581_230
    g = dropblock_gamma(32, 32)
    assert abs(g - 0.005 * 1024 / 25 / (28 * 28)) < 1e-15, g
    line = summary("training", "steps", [2.0, 1.0, 3.0], 10)
    assert line == "training: 3 steps, median 2.000 s each, 5.0 images/s", line
    print("tf_seed self-test: ok")


def build(tf, widths, hidden):
    layers = tf.keras.layers

    def bn():
        return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPS)

    class DropBlock(layers.Layer):
        """SPEC.md's DropBlock: centres on the (H-b+1) x (W-b+1) grid, padded back, b x b max-pool."""

        def call(self, x, training=False):
            _, h, w, c = x.shape
            b = BLOCK
            if not training or KEEP >= 1.0 or h < b or w < b:
                return x
            hs, ws = h - b + 1, w - b + 1
            centres = tf.cast(
                tf.random.uniform([tf.shape(x)[0], hs, ws, c]) < dropblock_gamma(h, w), x.dtype)
            before = (b - 1) - (b - 1) // 2
            centres = tf.pad(centres, [[0, 0], [before, h - hs - before],
                                       [before, w - ws - before], [0, 0]])
            mask = 1 - tf.nn.max_pool2d(centres, b, 1, "SAME")
            kept = tf.reduce_sum(mask)
            scale = tf.where(kept > 0, tf.cast(tf.size(mask), x.dtype) / kept, tf.zeros_like(kept))
            return x * mask * scale

    def conv_block(x, cout):
        for _ in range(2):
            x = layers.ReLU()(bn()(x))
            x = layers.Conv2D(cout, 3, padding="same", use_bias=False)(x)
        return x

    inp = tf.keras.Input((SIDE, SIDE, 3))
    x = inp
    for w in widths:
        h1 = layers.ReLU()(conv_block(x, w))
        h2 = conv_block(h1, w)
        x = layers.ReLU()(h1 + h2)
        x = DropBlock()(x)
        x = layers.MaxPool2D(3, 2, "same")(x)
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dense(hidden, use_bias=False)(x)
        x = layers.Dropout(DROPOUT_RATE)(layers.ReLU()(bn()(x)))
    x = bn()(layers.Dense(CLASSES, use_bias=False)(x))
    # FP32 logits for the loss (a no-op under the FP32 policy).
    x = layers.Activation("linear", dtype="float32")(x)
    return tf.keras.Model(inp, x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="seed")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads (0: TensorFlow's default, every core)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: Keras' mixed_bfloat16 policy (BF16 compute, FP32 variables)")
    ap.add_argument("--self-test", action="store_true", help="check the pure-Python parts and exit")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if args.batch_size < 2 or args.steps < 1 or args.warmup < 0:
        ap.error("--batch-size must be >= 2 (batch norm), --steps >= 1, --warmup >= 0")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.precision == "bf16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    widths, hidden = PRESETS[args.preset]
    tf.random.set_seed(0)
    model = build(tf, widths, hidden)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if params != expected_params(widths, hidden):
        sys.exit(f"tf_seed: {params} parameters, expected {expected_params(widths, hidden)}")
    opt = tf.keras.optimizers.Adam(LR)
    lossf = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = lossf(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, CLIP)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng(0)
    n = args.batch_size
    xb = tf.constant(rng.uniform(-1, 1, (n, SIDE, SIDE, 3)).astype(np.float32))
    yb = tf.constant((np.arange(n) % CLASSES).astype(np.int32))
    print(f"tf_seed: TensorFlow {tf.__version__}, preset {args.preset} (widths "
          f"{'/'.join(map(str, widths))}, hidden {hidden}), {params} parameters, batch {n}, "
          f"intra-op threads {args.threads or 'default'}, precision {args.precision}", flush=True)
    for _ in range(args.warmup):
        step(xb, yb).numpy()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step(xb, yb).numpy()
        times.append(time.perf_counter() - t0)
    if not np.isfinite(loss):
        sys.exit(f"tf_seed: the loss is {loss}")
    print(summary("training", "steps", times, n), flush=True)


if __name__ == "__main__":
    main()
