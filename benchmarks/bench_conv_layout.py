"""One 3x3 convolution, forward and backward, in the layouts and precisions training could use, side by side:
row-major (NCHW) or channels-last, float32 or bfloat16, oneDNN or PyTorch's own kernels. Shapes are
those of the classification workload of ``bench_train.py`` (T = 4 steps x batch 64 stacked).

    python benchmarks/bench_conv_layout.py            # 1 thread, CPU time per call, median of 10
"""

from __future__ import annotations

import argparse
import time

SHAPES = [(256, 48, 16, 16), (256, 16, 16, 16), (256, 48, 8, 32)]  # batch, in channels, size, out channels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    def cpu_ms(fn) -> float:
        fn()
        times = []
        for _ in range(args.repeats):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return 1e3 * sorted(times)[len(times) // 2]

    print("| batch x in -> out, size | dtype | layout | backend | ms (forward + backward) |\n|---|---|---|---|---|")
    for n, cin, size, cout in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for channels_last in (False, True):
                for onednn in (True, False):
                    torch.backends.mkldnn.enabled = onednn
                    fmt = torch.channels_last if channels_last else torch.contiguous_format
                    x = torch.randn(n, cin, size, size, dtype=dtype).to(memory_format=fmt).requires_grad_()
                    conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(dtype).to(memory_format=fmt)

                    def step(conv=conv, x=x):
                        y = conv(x)
                        y.backward(torch.ones_like(y))
                    print(f"| {n} x {cin} -> {cout}, {size}x{size} | {str(dtype)[6:]} | "
                          f"{'channels-last' if channels_last else 'NCHW'} | {'oneDNN' if onednn else 'native'} | "
                          f"{cpu_ms(step):.1f} |")
    torch.backends.mkldnn.enabled = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
