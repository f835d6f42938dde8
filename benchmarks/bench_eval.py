"""Evaluation speed against its budget: one policy over every asset of one fold, on 2 CPU cores.

The budget (issue #23): evaluating one model over all assets of one fold in at most 15 minutes, the exact 1-day part in at
most 2. The script times each part of `btc_rl.evaluate.evaluate` on the real data and the default checkpoints:
loading and tokenizing the corpus, the baselines (fitted and scored once per fold, then cached), the exact 1-day CRPS of
every test day of every asset, and the sampled 32-day paths; then prints the numbers against the budget.

    python benchmarks/bench_eval.py                              # checkpoints/sft_btc.pt, every asset, the defaults
    python benchmarks/bench_eval.py --assets BTC-USD --paths 100 --stride 4
"""
import argparse, time, warnings
import torch
from btc_rl.checkpoint import load_checkpoint, model_from_checkpoint
from btc_rl.corpus import load_corpus, resolve_assets
from btc_rl.evaluate import EvalConfig, asset_origins, baseline_table, next_day_crps, policy_config, policy_cum_paths
from btc_rl.tokenizer import load_tokenizer

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/sft_btc.pt")
    ap.add_argument("--tokenizer", default="models/tokenizer_model.pt")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--assets", default="all")
    ap.add_argument("--paths", type=int, default=EvalConfig().n_paths)
    ap.add_argument("--stride", type=int, default=EvalConfig().stride)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    cfg = EvalConfig(assets=a.assets, n_paths=a.paths, stride=a.stride)
    t, times = time.perf_counter(), {}
    tok = load_tokenizer(a.tokenizer)
    corpus = load_corpus(tok, None, a.data_dir, with_assets=a.assets.upper() not in ("BTC", "BTC-USD"))
    names = resolve_assets(a.assets, list(corpus.series))
    times["load and tokenize the data"] = time.perf_counter() - t
    start, end = corpus.splits.period("test")
    ck = load_checkpoint(a.ckpt); pcfg = policy_config(cfg, ck)
    series = {n: corpus.series[n] for n in names}
    origins = [o for o in (asset_origins(series[n], start, end, cfg, pcfg.context_len) for n in names) if len(o.origin_pos)]
    t = time.perf_counter(); baseline_table(series, origins, corpus.splits.train_end, cfg)
    times["baselines (4 forecasters, once per fold)"] = time.perf_counter() - t
    model = model_from_checkpoint(ck).eval()
    t = time.perf_counter(); next_day_crps(model, tok, series, origins, pcfg.context_len)
    times["policy: exact 1-day CRPS"] = time.perf_counter() - t
    t = time.perf_counter(); policy_cum_paths(model, tok, series, origins, pcfg)
    times[f"policy: {cfg.n_paths} paths of {cfg.horizon} days per origin"] = time.perf_counter() - t
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(origins)} assets, "
          f"{sum(len(o.day_pos) for o in origins):,} one-day targets, {sum(len(o.origin_pos) for o in origins):,} "
          f"{cfg.horizon}-day origins (every {cfg.stride} business days), test period {start.date()}..{end.date()}\n")
    print("| part | seconds |\n|---|---:|")
    for k, v in times.items(): print(f"| {k} | {v:.1f} |")
    one = times["policy: exact 1-day CRPS"]; pol = one + list(times.values())[-1]
    print(f"\none policy over every asset: {pol / 60:.1f} min (budget 15 min: {'met' if pol <= 900 else 'missed'}); "
          f"the exact 1-day part {one:.0f} s (budget 2 min: {'met' if one <= 120 else 'missed'})")

if __name__ == "__main__": main()
