"""The table's optional exact_match column (graded quality beside exact match) and the value-tie counts of validate."""

import numpy as np
import pytest
from conftest import make_small_table

from e5jax.cli import main
from e5jax.stats import quality_ties, table_summary
from e5jax.table import TableError, load_table


def _with_exact(t):
    return t.replace(exact_match=(t.quality > 0.7).astype(np.float64))


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_exact_match_round_trips_and_old_tables_load(tmp_path, suffix):
    t = _with_exact(make_small_table())
    t.save(tmp_path / f"t{suffix}")
    back = load_table(tmp_path / f"t{suffix}")
    np.testing.assert_array_equal(back.exact_match, t.exact_match)
    np.testing.assert_allclose(back.quality, t.quality, rtol=1e-6)
    make_small_table().save(tmp_path / f"old{suffix}")  # a table without the column still loads, as None
    assert load_table(tmp_path / f"old{suffix}").exact_match is None
    np.testing.assert_array_equal(t.tuning_split().exact_match, t.exact_match[t.split == "train"])


def test_exact_match_out_of_range_is_refused():
    t = make_small_table()
    bad = (t.quality * 0).copy()
    bad[2, 3] = 1.5
    with pytest.raises(TableError, match=r"request 'q2', config .*column exact_match: 1.5 must be in \[0, 1\]"):
        t.replace(exact_match=bad)


def test_quality_ties_known_answer():
    q = np.array([[1.0, 1.0, 1.0], [0.2, 0.9, 0.9], [0.1, 0.5, 0.3], [0.0, 0.0, 0.0]])
    ties = quality_ties(q, np.arange(4))
    assert ties == {"requests": 4, "all_equal": 2, "unique_max": 1, "tied_at_max_mean": 2.25,
                    "tied_at_max_median": 2.5, "tied_at_max_max": 3}
    assert quality_ties(q, np.array([1, 2]))["all_equal"] == 0


def test_validate_reports_value_ties_and_the_exact_match_column(tmp_path, capsys):
    t = _with_exact(make_small_table())
    s = table_summary(t)
    em = t.exact_match
    assert s["value_ties"]["exact_match"]["all"]["all_equal"] == int((em == em[:, :1]).all(-1).sum())
    assert s["value_ties"]["quality"]["all"]["requests"] == t.num_requests
    t.save(tmp_path / "t.npz")
    assert main(["validate", str(tmp_path / "t.npz")]) == 0
    out = capsys.readouterr().out
    assert "column exact_match" in out and "exact_match all:" in out and "quality     val:" in out
