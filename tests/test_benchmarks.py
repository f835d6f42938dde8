"The speed benchmarks run and split time as they say (speed itself is measured by running them, never asserted here)."
import subprocess, sys
import torch
import torch.nn.functional as F
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_rl

def test_op_split_counts_matmul_flops_and_sorts_kernels():
    a, b, q = torch.randn(64, 32), torch.randn(32, 16), torch.randn(1, 2, 8, 4)
    o = bench_rl.op_split(lambda: (a @ b, a @ b, F.scaled_dot_product_attention(q, q, q, is_causal=True), a.exp()))
    assert o["flops"] == 2 * (2 * 64 * 32 * 16)                                 # two (64 x 32) @ (32 x 16) products, counted exactly
    assert o["matmul"] > 0 and o["attention"] > 0 and "exp" in o["others"] and "mm" not in o["others"]
    assert not any("scaled_dot_product" in k for k in o["others"])
    assert o["matmul"] + o["attention"] + o["other ATen ops"] <= o["wall"]

def test_bench_rl_prints_its_three_tables():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_rl.py"), "--quick", "--size", "1x16x2", "--threads", "1"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    rows = [l for l in p.stdout.splitlines() if l.startswith("| 1x16 (2 heads) | ")]
    assert len(rows) == 3, p.stdout                                             # totals, split by part, split by kernel
    assert "plain forward + backward" in p.stdout and "by kernel" in p.stdout
    assert all("nan" not in r for r in rows), rows
