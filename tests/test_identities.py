"""Why a stored cell is not reused (xai_bench.run.identities)."""

from xai_bench.run.identities import IDENTITY_FORMAT, stale_reason


def _identity(**run):
    return {"model": {"name": "vit_nano"}, "method": {"name": "ixg", "params": {}},
            "metric": {"name": "deletion", "params": {"n_steps": 16}}, "data": {"spec": "shapes"},
            "run": {"format": IDENTITY_FORMAT, "seed": 0, **run}}


def test_a_cell_of_an_earlier_identity_format_is_stale_once_with_one_reason():
    new = _identity()
    old = _identity()
    del old["run"]["format"]
    old["metric"]["code"] = {"source": "0" * 64}  # and much else differs in an old cell
    reason = stale_reason({"identity": old, "records": []}, None, new, "vit_nano", "ixg",
                          "deletion")
    assert reason == (f"stale: written by an earlier xai-bench (identity format 1 → "
                      f"{IDENTITY_FORMAT}); computed once more")


def test_a_changed_parameter_is_named_and_an_equal_cell_is_reused():
    new = _identity()
    old = _identity()
    old["metric"]["params"]["n_steps"] = 32
    assert stale_reason({"identity": old, "records": []}, None, new, "vit_nano", "ixg",
                        "deletion") == "stale: deletion parameters changed (n_steps 32 → 16)"
    assert stale_reason({"identity": new, "records": [{"status": "ok"}]}, None, new,
                        "vit_nano", "ixg", "deletion") is None
