"""xai_bench.run.finish: what a run does with the rows of its cells when it collects them."""

import math

import pandas as pd

from xai_bench.run.finish import undefined_as_skipped
from xai_bench.storage.results import RECORD_COLUMNS, records_frame


def _row(sample, value, status="ok"):
    return dict(model="m", method="gradcam", metric="complexity", sample_id=sample, target=0,
                value=value, status=status, message="", category="complexity",
                higher_is_better=False, replicate=0)


def test_an_ok_row_without_a_finite_value_becomes_a_skipped_row_with_its_reason(tmp_path):
    """The entropy of an all-zero map is NaN: such a row used to stay 'ok' and the run failed
    reading its own records.csv back; now it is left out of the statistics, with a reason."""
    frame = records_frame([_row("img0", 0.5), _row("img1", math.nan), _row("img2", math.inf),
                           _row("-", math.nan, "error")])
    out = undefined_as_skipped(frame)
    assert list(out["status"]) == ["ok", "skipped", "skipped", "error"]
    assert out["value"].iloc[0] == 0.5 and out["value"].iloc[1:3].isna().all()
    assert "undefined on this sample (it gave nan" in out["message"].iloc[1]
    assert "it gave inf" in out["message"].iloc[2] and out["message"].iloc[3] == ""
    assert frame["status"].iloc[1] == "ok"  # the caller's frame is not modified
    # and the result reads back as a records file
    from xai_bench.storage.results import read_records

    path = tmp_path / "records.csv"
    out[[c for c in RECORD_COLUMNS if c in out]].to_csv(path, index=False)
    back = read_records(tmp_path)
    assert list(back["status"]) == ["ok", "skipped", "skipped", "error"]


def test_rows_with_finite_values_are_returned_unchanged():
    frame = records_frame([_row("img0", 0.5), _row("img1", 0.0)])
    pd.testing.assert_frame_equal(undefined_as_skipped(frame), frame)
