"""benchmarks/method_cost.py runs and prints its table (nano, one round, two methods)."""

from __future__ import annotations

from conftest import load_benchmark


def _script():
    return load_benchmark("method_cost")


def test_method_cost_runs_on_nano(capsys):
    script = _script()
    assert script.main(["--sizes", "nano", "--batch-sizes", "2", "--methods", "rollout,ixg",
                        "--repeats", "1", "--clock", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# torch ") and "cpu clock" in lines[0]
    assert lines[1].split() == ["model", "batch", "method", "fwd", "ms/img", "method",
                                "ms/img", "cost", "(fwd)", "flops", "(fwd)", "target", "ok"]
    rows = [line.split() for line in lines[3:] if not line.startswith("#")]
    # the reference row and both methods for each model of the pair (ixg applies to both)
    assert [(r[0], r[2]) for r in rows] == [
        ("bcos_vit_nano", "(fwd+bwd)"), ("bcos_vit_nano", "rollout"), ("bcos_vit_nano", "ixg"),
        ("vit_nano", "(fwd+bwd)"), ("vit_nano", "rollout"), ("vit_nano", "ixg")]
    for r in rows:
        assert r[1] == "2"
        fwd_ms, method_ms, cost = float(r[3]), float(r[4]), float(r[5])
        assert fwd_ms > 0 and method_ms > 0 and cost > 0
    flops = {(r[0], r[2]): float(r[6]) for r in rows}
    # rollout runs one forward's products (and the rollout's few small ones); a forward and a
    # backward to the input run about twice the forward's
    for model in ("bcos_vit_nano", "vit_nano"):
        assert 1.0 <= flops[(model, "rollout")] < 1.2
        assert 1.5 < flops[(model, "(fwd+bwd)")] < 2.5
    assert all(r[7] == "1.1" for r in rows if r[2] == "rollout")
    assert all(r[7] == "2.5" for r in rows if r[2] == "ixg")


def test_forwards_bracket_every_method_call_and_are_warmed_up(monkeypatch):
    """Each timed forward follows an untimed one, and there is one timed forward more than
    method calls (before each call and after the last)."""
    script = _script()
    events = []

    def fake_timed(fn, device, clock=None):
        name = getattr(fn, "__name__", "")
        events.append((name, clock is not None))
        fn()
        return 1.0 if name == "forward" else 3.0

    monkeypatch.setattr(script, "timed", fake_timed)
    import torch
    import xai_bench

    torch.manual_seed(0)
    model = xai_bench.get_model("vit_nano").eval()
    r = script.measure(model, script.InputGradient(), 1, 3, torch.device("cpu"),
                       clock=lambda: 0.0)
    assert r["cost"] == 3.0
    timed_calls = [name for name, is_timed in events if is_timed]
    assert timed_calls == ["forward", "explain"] * 3 + ["forward"]
    for i, (name, is_timed) in enumerate(events):
        if is_timed and name == "forward":
            assert events[i - 1] == ("forward", False)  # an untimed warm-up right before
