#!/usr/bin/env python3
"""The seed network in PyTorch, as the yardstick for `trainer bench --device cuda`.

The network, loss and optimizer follow /work/shared/SPEC.md (the same as trainer/src/model.rs):

    conv_block(cin, cout)      = BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 (no bias, SAME)
    residual_block(cin, cout)  : h1 = ReLU(conv_block(x)); h2 = conv_block(h1);
                                 y = maxpool3x3/2 SAME(DropBlock5(ReLU(h1 + h2)))
    widths 128, 256, 512, 1024 (32 -> 16 -> 8 -> 4 -> 2), flatten 4096,
    FC 4096 -> BN -> ReLU -> dropout, FC 4096 -> BN -> ReLU -> dropout, FC 100 -> BN (no biases),
    mean softmax cross-entropy, gradients clipped to global norm 100, Adam lr 5e-4.

It times a full training step (zero the gradients, forward, loss, backward, clip, update) at
batch 250 in fp32 with TF32 off, with TF32 on (PyTorch's default for convolutions), and in
automatic mixed precision with BF16 and channels_last tensors (`--amp`: the forward under
torch.autocast(bfloat16), so convolutions and linear layers run in BF16 with FP32 accumulation,
batch norm and the loss in FP32; the weights and Adam stay FP32; model and input channels_last,
NHWC in memory, cuDNN's preferred layout for tensor cores), as `trainer bench` does: DropBlock at the keep
probability of the second epoch (0.995, masks drawn) and dropout 0.5 active. cuDNN may pick its
fastest algorithms (cudnn.benchmark); tensors are NCHW. Each mode: `--warmup` untimed steps, then
`--steps` steps timed one by one with CUDA events (synchronising after each), the median reported.

Output: one `RESULT` line per mode and one Markdown table row (`| PyTorch ...`) to copy into
BENCHMARKS.md; with `--out FILE` the same lines are appended to FILE.

    python3 scripts/torch_seed.py --device cpu --batch-size 2 --steps 1   # smoke run
    python3 scripts/torch_seed.py --device cuda                           # TF32 off, on, AMP bf16
    python3 scripts/torch_seed.py --self-test                             # no torch needed

Adam here is PyTorch's (epsilon added to the bias-corrected sqrt(v)), where the seed and this
project use TensorFlow 1's form; the two cost the same, which is all this script measures.
"""

import argparse
import statistics
import sys
import time

WIDTHS = (128, 256, 512, 1024)
HIDDEN = 4096
CLASSES = 100
BLOCK = 5
KEEP = 0.995
DROPOUT_KEEP = 0.5
BN_EPS = 1e-5
# PyTorch's BN momentum weighs the new batch: 1 - 0.997.
BN_MOMENTUM = 0.003
LR = 5e-4
CLIP = 100.0
SIDE = 32


def expected_params(widths=WIDTHS, hidden=HIDDEN, classes=CLASSES, channels=3):
    """Trainable values of the network (convolutions, FC weights, BN scales and shifts)."""

    def conv_block(cin, cout):
        return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout

    total, cin = 0, channels
    for w in widths:
        total += conv_block(cin, w) + conv_block(w, w)
        cin = w
    side = SIDE
    for _ in widths:
        side = same_out(side)
    flat = cin * side * side
    total += flat * hidden + 2 * hidden + hidden * hidden + 2 * hidden
    total += hidden * classes + 2 * classes
    return total


def same_out(size, stride=2):
    """TensorFlow SAME output size: ceil(size / stride)."""
    return -(-size // stride)


def same_pads(size, kernel=3, stride=2):
    """(before, after) padding of TensorFlow SAME: the smaller half before."""
    total = max((same_out(size, stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def dropblock_gamma(h, w, block=BLOCK, keep=KEEP):
    """Bernoulli rate of block centres, per SPEC.md."""
    return (1 - keep) * (w * h) / block**2 / ((w - block + 1) * (h - block + 1))


def median_ms(times_ms):
    return statistics.median(times_ms)


def result_lines(label, device_name, batch, times_ms, torch_version):
    """The RESULT line and the BENCHMARKS.md row of one mode."""
    med = median_ms(times_ms)
    ips = batch * 1000.0 / med
    spread = f"{min(times_ms):.1f}-{max(times_ms):.1f}"
    result = (
        f"RESULT torch_seed {label}: {device_name}, batch {batch}, {len(times_ms)} steps, "
        f"median {med:.1f} ms/step (range {spread}), {ips:.1f} images/s"
    )
    row = (
        f"| PyTorch {torch_version}, seed network, {label} | {device_name} | {batch} | "
        f"{med:.1f} ms | {ips:.1f} |"
    )
    return result, row


def self_test():
    """Checks the pure-Python parts (no torch needed)."""
    # TensorFlow counts 77,791,822 trainable values for this network (SPEC.md).
    assert expected_params() == 77_791_822, expected_params()
    assert [same_out(s) for s in (32, 16, 8, 4)] == [16, 8, 4, 2]
    assert same_pads(32) == (0, 1) and same_pads(16) == (0, 1) and same_pads(5) == (1, 1)
    g = dropblock_gamma(32, 32)
    assert abs(g - 0.005 * 1024 / 25 / (28 * 28)) < 1e-15, g
    assert median_ms([3.0, 1.0, 2.0, 10.0]) == 2.5
    assert cuda_modes("both", "on") == [("fp32 TF32 off", False, False), ("fp32 TF32 on", True, False),
                                        ("AMP bf16 channels_last", True, True)]
    assert cuda_modes("off", "off") == [("fp32 TF32 off", False, False)]
    r, row = result_lines("fp32 TF32 off", "NVIDIA H100", 250, [100.0, 100.0, 140.0], "2.11.0")
    assert "median 100.0 ms/step" in r and "2500.0 images/s" in r, r
    assert row == "| PyTorch 2.11.0, seed network, fp32 TF32 off | NVIDIA H100 | 250 | 100.0 ms | 2500.0 |"
    print("torch_seed self-test: ok")


def build(torch, device):
    nn = torch.nn
    F = torch.nn.functional

    def conv3x3(cin, cout):
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        nn.init.xavier_uniform_(conv.weight)
        return conv

    def bn2d(c):
        return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.bn1, self.conv1 = bn2d(cin), conv3x3(cin, cout)
            self.bn2, self.conv2 = bn2d(cout), conv3x3(cout, cout)

        def forward(self, x):
            x = self.conv1(F.relu(self.bn1(x)))
            return self.conv2(F.relu(self.bn2(x)))

    class DropBlock(nn.Module):
        """SPEC.md's DropBlock: centres on the (H-b+1) x (W-b+1) grid, padded back, b x b max-pool."""

        def __init__(self, block, keep):
            super().__init__()
            self.block, self.keep = block, keep

        def forward(self, x):
            n, c, h, w = x.shape
            b = self.block
            if not self.training or self.keep >= 1.0 or h < b or w < b:
                return x
            gamma = dropblock_gamma(h, w, b, self.keep)
            centres = torch.bernoulli(
                torch.full((n, c, h - b + 1, w - b + 1), gamma, device=x.device)
            )
            before, after = (b - 1) - (b - 1) // 2, (b - 1) // 2
            centres = F.pad(centres, (before, after, before, after))
            mask = 1.0 - F.max_pool2d(centres, b, stride=1, padding=b // 2)
            kept = mask.sum()
            scale = torch.where(kept > 0, mask.numel() / kept, torch.zeros_like(kept))
            return x * mask * scale

    class MaxPoolSame(nn.Module):
        def forward(self, x):
            (t, bo), (l, r) = same_pads(x.shape[2]), same_pads(x.shape[3])
            return F.max_pool2d(F.pad(x, (l, r, t, bo), value=float("-inf")), 3, stride=2)

    class Residual(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.a, self.b = ConvBlock(cin, cout), ConvBlock(cout, cout)
            self.drop, self.pool = DropBlock(BLOCK, KEEP), MaxPoolSame()

        def forward(self, x):
            h1 = F.relu(self.a(x))
            y = F.relu(h1 + self.b(h1))
            return self.pool(self.drop(y))

    def fc(fin, fout):
        layer = nn.Linear(fin, fout, bias=False)
        nn.init.xavier_uniform_(layer.weight)
        return layer

    def bn1d(c):
        return nn.BatchNorm1d(c, eps=BN_EPS, momentum=BN_MOMENTUM)

    blocks, cin = [], 3
    for w in WIDTHS:
        blocks.append(Residual(cin, w))
        cin = w
    flat = WIDTHS[-1] * 2 * 2
    p = 1.0 - DROPOUT_KEEP
    model = nn.Sequential(
        *blocks,
        nn.Flatten(),
        fc(flat, HIDDEN), bn1d(HIDDEN), nn.ReLU(), nn.Dropout(p),
        fc(HIDDEN, HIDDEN), bn1d(HIDDEN), nn.ReLU(), nn.Dropout(p),
        fc(HIDDEN, CLASSES), bn1d(CLASSES),
    )
    return model.to(device)


def set_tf32(torch, on):
    """TF32 for cuBLAS matrix products and cuDNN convolutions, through whichever API this
    PyTorch has (the fp32_precision settings of 2.9+, else the allow_tf32 flags)."""
    mode = "tf32" if on else "ieee"
    try:
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
        return f"fp32_precision={mode}"
    except (AttributeError, RuntimeError, TypeError, ValueError):
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
        return f"allow_tf32={on}"


def cuda_modes(tf32, amp):
    """The (label, TF32 on, AMP bf16) modes a CUDA run times, in order."""
    modes = [(f"fp32 TF32 {'on' if on else 'off'}", on, False)
             for on in {"off": [False], "on": [True], "both": [False, True]}[tf32]]
    if amp == "on":
        modes.append(("AMP bf16 channels_last", True, True))
    return modes


def time_mode(torch, device, batch, warmup, steps, seed, amp=False):
    torch.manual_seed(seed)
    model = build(torch, device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    x = torch.rand(batch, 3, SIDE, SIDE, device=device) * 2 - 1
    y = torch.randint(0, CLASSES, (batch,), device=device)
    params = sum(p.numel() for p in model.parameters())
    assert params == expected_params(), f"{params} parameters, expected {expected_params()}"
    if amp:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def forward_loss():
        if amp:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                logits = model(x)
            return torch.nn.functional.cross_entropy(logits.float(), y)
        return torch.nn.functional.cross_entropy(model(x), y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return loss

    cuda = device.type == "cuda"
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            loss = step()
            times.append((time.perf_counter() - t0) * 1e3)
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss is {loss.item()}")
    return times, params, loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--tf32", choices=["off", "on", "both"], default="both",
                    help="cuda only; the CPU runs plain fp32")
    ap.add_argument("--amp", choices=["off", "on"], default="on",
                    help="cuda only: also time AMP bf16 with channels_last")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="append the RESULT lines and table rows to this file")
    ap.add_argument("--self-test", action="store_true", help="check the pure-Python parts and exit")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if args.batch_size < 2 or args.steps < 1 or args.warmup < 0:
        ap.error("--batch-size must be >= 2 (batch norm), --steps >= 1, --warmup >= 0")

    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("torch_seed: --device cuda, but PyTorch sees no GPU")
        name = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True
        modes = cuda_modes(args.tf32, args.amp)
    else:
        name = "CPU"
        modes = [("fp32", None, False)]
    print(f"torch_seed: torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"device {device} ({name})", flush=True)
    lines = []
    for label, tf32, amp in modes:
        if tf32 is not None:
            how = set_tf32(torch, tf32)
            print(f"torch_seed: {label} ({how})", flush=True)
        times, params, loss = time_mode(torch, device, args.batch_size, args.warmup, args.steps,
                                        args.seed, amp)
        result, row = result_lines(label, name, args.batch_size, times, torch.__version__)
        print(f"torch_seed: {params} parameters, last loss {loss:.4f}, steps (ms): "
              + " ".join(f"{t:.1f}" for t in times))
        print(result, flush=True)
        lines += [result, row]
    print("\n".join(line for line in lines if line.startswith("|")))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
