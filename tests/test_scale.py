"""Scale-out and device correctness: torchrun-style data parallelism (gloo, 2 processes), sweeps through submitit,
TensorBoard logs, bf16 autocast on CPU, random state and tensors that follow the policy's device."""
import copy, os, socket, warnings
import pytest
import torch
import torch.multiprocessing as mp
from btc_rl.model import GPT, GPTConfig, sampling_logprobs
from btc_rl.reinforce import RLConfig, EpisodeSource, rl_step, sequence_logprobs
from btc_rl.rl_run import reinforce_finetune, restore_generator
from conftest import tiny_rl

class UnitTok:
    "Stand-in tokenizer: token k decodes to a return of (k - 3) / 100."
    codewords = ((torch.arange(8.0) - 3) / 100)[:, None]
    def decode(self, ids): return (ids.float() - 3) / 100

CASES = [dict(reward="return_mse", baseline="loo", group_size=1), dict(reward="crps", baseline="group", group_size=2),
         dict(reward="token_acc", baseline="exact", group_size=1, top_k=5, kl_coef=0.1)]

def _setup(case: dict):
    torch.manual_seed(0)
    pol = GPT(GPTConfig(vocab_size=8, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in pol.parameters(): p.mul_(10)
    ref = copy.deepcopy(pol).requires_grad_(False)
    ids = torch.randint(0, 8, (300,), generator=torch.Generator().manual_seed(0))
    src = EpisodeSource.of_tokens(ids, UnitTok().decode(ids)[:, None] + 0.002)
    cfg = RLConfig(batch_episodes=8, context_len=12, horizon=6, grad_clip=1e9, **case).validate()
    return pol, ref, torch.optim.SGD(pol.parameters(), lr=1.0), src, cfg

def _step(case: dict):
    pol, ref, opt, ids, cfg = _setup(case)
    m = rl_step(pol, ref, opt, ids, cfg, UnitTok(), torch.Generator().manual_seed(1))
    return pol.state_dict(), m

def _worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from btc_rl.distributed import dist_setup, dist_cleanup
    dist_setup("cpu")
    res = [_step(c) for c in CASES]
    if rank == 0: torch.save(res, out)
    dist_cleanup()

def _free_port() -> int:
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def test_two_gloo_processes_make_the_single_process_update(tmp_path):
    "Two processes (gloo, CPU), each sampling half the contexts: the same update and metrics as one process on the same episodes."
    out = tmp_path / "dist.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    for case, (w2, m2) in zip(CASES, got):
        w1, m1 = _step(case)
        for k in w1: torch.testing.assert_close(w2[k], w1[k], rtol=1e-6, atol=1e-7, msg=lambda s: f"{case} {k}: {s}")
        for k in ("score_mean", "reward_std", "loss", "grad_norm", "entropy", "kl_ref"):
            assert abs(m2[k] - m1[k]) <= 1e-6 * max(1.0, abs(m1[k])), (case, k, m1[k], m2[k])

def test_sampler_topk_sets_are_reused():
    "With the sampler's sets given, the teacher-forced log-probs never recompute top-k: a near-tie cannot make log pi = -inf."
    logits = torch.tensor([[2.0, 1.0, 1.0 - 1e-7, 0.0]])
    keep = torch.tensor([[True, False, True, False]])                           # the sampler kept token 2 (its logits differed by an ulp)
    lp = sampling_logprobs(logits, top_k=2, keep=keep)
    assert torch.isfinite(lp[0, 2]) and lp[0, 1] == float("-inf")
    assert sampling_logprobs(logits, top_k=2)[0, 2] == float("-inf")           # recomputing would have dropped it
    pol, _, _, src, cfg = _setup(dict(top_k=3))
    ctx = src.ids[:24].view(2, 12)
    keep = torch.empty(2, 6, 8, dtype=torch.bool)
    toks, lps = pol.sample(ctx, 6, top_k=3, generator=torch.Generator().manual_seed(0), keep=keep)
    assert (keep.sum(-1) >= 3).all()
    lp, _ = sequence_logprobs(pol, ctx, toks, top_k=3, keep=keep)
    torch.testing.assert_close(lp, lps, rtol=1e-4, atol=1e-5)

def test_generators_and_noise_follow_the_policy_device(monkeypatch):
    "Every generator these code paths create names a device derived from the policy (so CUDA policies get CUDA generators)."
    pol, _, _, src, _ = _setup({})
    made, Real = [], torch.Generator
    def recording(device=None):
        made.append(device); return Real(device=device) if device is not None else Real()
    monkeypatch.setattr(torch, "Generator", recording)
    import numpy as np
    from btc_rl.variance import VarianceConfig, variance_study
    from btc_rl.evaluate import AssetOrigins, EvalConfig, next_day_crps, policy_cum_paths
    from btc_rl.reinforce import validation_score
    variance_study(pol, src, UnitTok(), VarianceConfig(contexts=4, group=2, batch_sizes=(2,), ref_episodes=16, context_len=8,
                                                        horizon=4, rewards=("token_acc", "return_mse")), progress=False)
    class Norm: per_asset = False; stats = staticmethod(lambda a=None: (0.0, 1.0))
    class Tok(UnitTok): normalizer = Norm()
    class Series: pass
    s = Series(); s.ids = src.ids; s.asset = "X"
    o = AssetOrigins("X", np.array([50, 60]), np.array([50, 60]), None)
    policy_cum_paths(pol, Tok(), {"X": s}, [o], EvalConfig(horizon=4, context_len=8, n_paths=3, temperature=1.0, top_k=0))
    validation_score(pol, src.spaced(2, 8, 4), RLConfig(horizon=4, eval_samples=2, reward="return_mse"), UnitTok())
    assert made and all(d is not None and torch.device(d).type == "cpu" for d in made), made

def test_restore_generator_continues_or_reseeds_deterministically():
    g = torch.Generator().manual_seed(3); state = g.get_state(); want = torch.rand(3, generator=g)
    h = torch.Generator()
    assert restore_generator(h, state) and torch.equal(torch.rand(3, generator=h), want)
    cuda_like = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)   # a CUDA generator's 16-byte state
    a, b = torch.Generator(), torch.Generator()
    assert not restore_generator(a, cuda_like) and not restore_generator(b, cuda_like)
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))

def test_bf16_autocast_runs_on_cpu(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = reinforce_finetune(tiny_rl(tiny, "bf16.pt", steps=2, dtype="bfloat16", top_k=4, kl_every=1), progress=False)
    h = res.history
    assert len(h) == 2 and h["skipped_step"].sum() == 0 and h[["loss", "entropy", "kl_ref"]].notna().all().all()
    with pytest.raises(ValueError, match="dtype='float16'"): RLConfig(dtype="float16").validate()

def test_tensorboard_event_files_hold_the_scalars(tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, "tb.pt", steps=3, log="tensorboard", kl_every=2), progress=False)
    d = tiny / "tb.tb"
    assert list(d.glob("events.out.tfevents.*")), "no event file"
    acc = EventAccumulator(str(d)).Reload()
    tags = acc.Tags()["scalars"]
    assert {"rl/score_mean", "rl/loss", "rl/entropy", "rl/val_score"} <= set(tags)
    assert [e.step for e in acc.Scalars("rl/score_mean")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("rl/kl_ref")] == [1, 3]                # measured every kl_every steps (steps 0 and 2, 0-based)

def test_sweep_of_two_jobs_runs_locally(tiny, tmp_path):
    from btc_rl.sweep import sweep, sweep_grid
    jobs, skipped = sweep_grid(seeds=[0, 1], rewards=["return_mse"], baselines=["mean"], group_sizes=[1], steps=2, batch_episodes=4,
                               context_len=24, horizon=8, eval_every=1, eval_episodes=4, eval_samples=2, data_dir=str(tiny),
                               tokenizer=str(tiny / "tok.pt"), checkpoint_in=str(tiny / "sft.pt"), device="cpu")
    assert len(jobs) == 2 and not skipped
    res = sweep(jobs, tmp_path / "sw", executor="local", timeout_min=10)
    assert not res.failed, res.failed
    assert sorted(res.table.seed) == [0, 1] and (res.table.steps == 2).all() and res.table.gain.notna().all()
    assert (tmp_path / "sw" / "sweep.csv").is_file() and (tmp_path / "sw" / "sweep.png").is_file()
    assert all((tmp_path / "sw" / j / "train.ipynb").is_file() for j in res.table.job)
    assert "return_mse" in res._repr_markdown_()

def _lm_run_last():
    "Three stage 1 steps of train_lm on fixed sequences, no dropout; validation improves at every step, so the last weights are kept."
    from btc_rl.train import LMConfig, train_lm
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8, block_size=32, n_layer=1, n_head=2, n_embd=16))
    seqs = [torch.randint(0, 8, (n,), generator=torch.Generator().manual_seed(n)) for n in (60, 90)]
    cfg = LMConfig(steps=3, batch_size=8, seq_len=12, context=0, eval_every=1, patience=10, warmup=1, dropout=0.0, rescale=0.0, device="cpu")
    calls = iter(range(100))
    model, _ = train_lm(model, seqs, lambda m: {"ce_bits": -float(next(calls))}, cfg, progress=False)
    return model.state_dict()

def _lm_worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from btc_rl.distributed import dist_setup, dist_cleanup
    dist_setup("cpu")
    sd = _lm_run_last()
    if rank == 0: torch.save(sd, out)
    dist_cleanup()

def test_two_gloo_processes_make_the_single_process_lm_update(tmp_path):
    "Stage 1/2 under two processes: each trains on every other window of the same batch; the weights equal one process's."
    out = tmp_path / "lm.pt"
    mp.spawn(_lm_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got, want = torch.load(out, weights_only=False), _lm_run_last()
    torch.manual_seed(0); start = GPT(GPTConfig(vocab_size=8, block_size=32, n_layer=1, n_head=2, n_embd=16)).state_dict()
    assert any((want[k] - start[k]).abs().max() > 1e-4 for k in want)                 # the steps did move the weights
    for k in want: torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=lambda s: f"{k}: {s}")

def _refusal_worker(rank: int, world: int, port: int, d: str, out: str):
    import datetime, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    from pathlib import Path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reinforce_finetune(tiny_rl(Path(d), out=str(Path(out) / "taken.pt"), steps=1, device="cpu"), progress=False)
        msg = "ran"
    except Exception as e: msg = f"{type(e).__name__}: {e}"
    Path(out, f"rank{rank}.txt").write_text(msg)
    dist.destroy_process_group()

def test_a_refusal_on_rank_0_stops_every_rank(tiny, tmp_path):
    "Rank 0 refuses to replace another run's checkpoint: both processes stop with its message (none waits for a collective)."
    import time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reinforce_finetune(tiny_rl(tiny, str(tmp_path / "taken.pt"), steps=1, device="cpu"), progress=False)   # another run's checkpoint at --out
    ctx = mp.spawn(_refusal_worker, args=(2, _free_port(), str(tiny), str(tmp_path)), nprocs=2, join=False)
    deadline = time.time() + 120
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes: p.kill()
            pytest.fail("the processes hung after rank 0's refusal")
    r0, r1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    assert r0.startswith("ValueError") and "already holds" in r0, r0
    assert r1.startswith("RuntimeError: rank 0 stopped: ValueError") and "already holds" in r1, r1
