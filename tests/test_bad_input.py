"""Every malformed config, table and bridge argument is refused the same way: one line on stderr that names the
field, exit code 2, no traceback, nothing written to the output."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_small_table
from e5jax.cli import main as cli_main

QUICK = """[run]
seeds = 1
methods = ["lut"]
total_env_steps = 512
env_steps_per_update = 256
eval_every = 1
"""

# (TOML appended to / replacing the quick config, expected words in the message)
CONFIGS = [
    ('[run]\nmethods = ["lut", "nope"]\n', "unknown method 'nope'"),
    ("[run]\nfoo = 1\n", "unknown key 'foo'"),
    ("[nope]\nx = 1\n", "unknown section [nope]"),
    ("[run]\nlam = -1.0\n", "lam must be a finite number >= 0"),
    ('[run]\nlam = "two"\n', "lam must be a number"),
    ("[run]\nbudgets = []\n", "budgets is empty"),
    ("[run]\nbudgets = [0.5, 1.2]\n", "budgets must be fractions in (0, 1]"),
    ("[run]\nbudgets = [0.0, 0.5]\n", "budgets must be fractions in (0, 1]"),
    ("[run]\nbudgets = [0.5, 0.5]\n", "budgets must be distinct"),
    ("[run]\ntotal_env_steps = 1000\n", "must be a positive multiple of env_steps_per_update"),
    ("[run]\neval_every = 0\n", "eval_every must be >= 1"),
    # 2 updates in chunks of 3 would train 3 updates (768 env steps > 512): refused, naming what fits
    ("[run]\neval_every = 3\n", "eval_every (3) does not divide the 2 updates"),
    ("[run]\ntotal_env_steps = 204800\neval_every = 30\n", "810 updates (207,360 env steps, over the budget); "
     "use an eval_every that divides 800 (e.g. 25 or 32) or total_env_steps = 207360"),
    ('[run]\nmethods = ["dpo"]\n[dpo]\npairing = "all"\n', "pairing must be ranks or best_worst"),
    ("[run]\nseeds = 0\n", "seeds must be >= 1"),
    ('[run]\nseeds = "five"\n', "seeds must be an integer"),
    ("[run]\nseeds = 2.5\n", "seeds must be an integer"),
    ("[run]\nlatency_noise = 1\n", "latency_noise must be true or false"),
    ("[run]\noracle_tol = -1e-3\n", "oracle_tol must be a finite number >= 0"),
    ('[run]\nmethods = ["grpo"]\n[grpo]\ngroup_size = 1\n', "group_size must be >= 2"),
    ('[run]\nmethods = ["dpo"]\n[dpo]\ngroup_size = 0\n', "group_size must be >= 2"),
    ('[run]\nmethods = ["knn_lut"]\n[knn_lut]\nk = 0\n', "k must be >= 1"),
    ('[run]\nmethods = ["ppo"]\n[learner]\nhead = "tree"\n', "head must be one of"),
    ('[run]\nmethods = ["ppo"]\n[learner]\nlr = "fast"\n', "lr must be a number"),
    ('[run]\nmethods = ["ppo"]\n[learner]\nlr = -1.0\n', "[ppo]: lr must be > 0, got -1.0"),
    ('[run]\nmethods = ["supervised"]\n[supervised]\nlabel_tol = -0.1\n', "label_tol must be >= 0, got -0.1"),
    ('[run]\nmethods = ["dpo"]\n[dpo]\nlabel_smoothing = 0.5\n', "label_smoothing must be in [0, 0.49]"),
    ('[run]\nthresholds = "speed=3"\n', "unknown key 'speed'"),
    ("[run\n", "not valid TOML"),
]


def _merge(base: str, extra: str) -> str:
    """Later keys win: the quick config with the [run] keys of ``extra`` replaced and other sections appended."""
    if extra.startswith("[run\n"):
        return extra
    section, out = None, {}
    for text in (base, extra):
        for line in text.splitlines():
            if line.startswith("["):
                section = line
                out.setdefault(section, {})
            elif "=" in line:
                k, _, v = line.partition("=")
                out[section][k.strip()] = v.strip()
    return "".join(f"{s}\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for s, kv in out.items())


def _one_line_error(capsys, rc: int, words: str, prog: str = "e5jax") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    assert words in err[0], (words, err[0])
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("extra,words", CONFIGS, ids=[w for _, w in CONFIGS])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, capsys, extra, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_merge(QUICK, extra))
    out = tmp_path / "out"
    rc = cli_main(["run", "--config", str(cfg), "--out", str(out), "--no-progress"])
    _one_line_error(capsys, rc, words)
    assert not out.exists()


def test_bad_cli_values(tmp_path, capsys):
    out = tmp_path / "out"
    _one_line_error(capsys, cli_main(["run", "--seeds", "0", "--out", str(out)]), "seeds must be >= 1")
    _one_line_error(capsys, cli_main(["run", "--methods", "lut,xx", "--out", str(out)]), "unknown method 'xx'")
    _one_line_error(capsys, cli_main(["run", "--thresholds", "gaps=a/b", "--out", str(out)]), "is not key=number")
    _one_line_error(capsys, cli_main(["run", "--config", str(tmp_path / "missing.toml"), "--out", str(out)]),
                    "no such file")
    _one_line_error(capsys, cli_main(["validate", "--oracle-tol", "-0.1"]), "--oracle-tol must be >= 0")
    assert not out.exists()


def _edit_csv(text: list[str], column: str, value) -> list[str]:
    """Set ``column`` to ``value`` in every data row (value(row_index, old) if callable)."""
    hdr = text[0].split(",")
    j = hdr.index(column)
    out = [text[0]]
    for i, r in enumerate(text[1:]):
        f = r.split(",")
        f[j] = str(value(i, f[j]) if callable(value) else value)
        out.append(",".join(f))
    return out


BAD_TABLES = {  # case: (build the bad table from a good one, edit its CSV, words of the message)
    "no_val": (lambda t: t.replace(split=np.full(t.num_requests, "train")),
               lambda x: _edit_csv(x, "split", "train"), "no request in the 'val' split"),
    "nan_quality": (lambda t: t.replace(quality=np.where(np.arange(t.quality.size).reshape(t.quality.shape) == 5,
                                                         np.nan, t.quality)),
                    lambda x: _edit_csv(x, "quality", lambda i, old: "nan" if i == 5 else old), "non-finite value"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_table_is_refused(tmp_path, capsys, case):
    from e5jax.table import TableError

    build, edit, words = BAD_TABLES[case]
    good = make_small_table()
    with pytest.raises(TableError) as e:
        build(good)
    assert words in str(e.value)
    path = tmp_path / "t.csv"
    good.to_csv(path)
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    out = tmp_path / "out"
    _one_line_error(capsys, cli_main(["validate", str(path)]), words.split("'")[0])
    _one_line_error(capsys, cli_main(["run", "--table", str(path), "--out", str(out)]), words.split("'")[0])
    assert not out.exists()


def test_bad_table_files(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "t.txt").write_text("x")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    _one_line_error(capsys, cli_main(["validate", str(tmp_path / "empty.csv")]), "empty file")
    _one_line_error(capsys, cli_main(["validate", str(tmp_path / "t.txt")]), "unknown table extension")
    _one_line_error(capsys, cli_main(["validate", str(tmp_path / "junk.npz")]), "not a readable .npz file")
    _one_line_error(capsys, cli_main(["validate", str(tmp_path / "missing.npz")]), "no such file")
    _one_line_error(capsys, cli_main(["validate", str(tmp_path)]), "is a directory")
    out = tmp_path / "out"
    _one_line_error(capsys, cli_main(["run", "--table", str(tmp_path / "empty.csv"), "--out", str(out)]), "empty file")
    assert not out.exists()


def test_large_table_loads_in_seconds(tmp_path):
    import time

    from e5jax.synth import generate
    from e5jax.table import load_table

    t = generate(seed=1, num_requests=100_000)
    p = tmp_path / "big.npz"
    t.save(p)
    t0 = time.perf_counter()
    u = load_table(p)
    assert time.perf_counter() - t0 < 10.0 and u.num_requests == 100_000


def test_bad_bridge_arguments(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from profiling_bridge.cli import main as bridge

    (tmp_path / "notatable.npz").write_bytes(b"garbage")
    (tmp_path / "bad_shapes.json").write_text('[{"request_id": "r0"}]')
    (tmp_path / "shapes.json").write_text(
        '[{"request_id": "r0", "task_type": "a", "split": "train", "prompt_tokens": 5, "output_tokens": 2},'
        ' {"request_id": "r1", "task_type": "b", "split": "val", "prompt_tokens": 7, "output_tokens": 3}]')
    out = str(tmp_path / "o.npz")
    cases = [
        (["profile", "--arch", "tiny", "--requests", str(tmp_path / "bad_shapes.json"), "--out", out],
         "request #1 has no 'task_type'"),
        (["profile", "--arch", "gpt5", "--requests", str(tmp_path / "shapes.json"), "--out", out], "unknown arch 'gpt5'"),
        (["profile", "--arch", "tiny", "--requests", str(tmp_path / "notatable.npz"), "--out", out], "not a readable .npz"),
        (["refresh", "--arch", "tiny", "--table", str(tmp_path / "notatable.npz"), "--out", out], "not a readable .npz"),
        (["profile", "--arch", "tiny", "--requests", str(tmp_path / "shapes.json"), "--out", out, "--repeats", "0",
          "--grid", "vision_tokens=4,16"], "must be at least 1"),
        (["profile", "--arch", "tiny", "--requests", str(tmp_path / "shapes.json"), "--out", str(tmp_path / "o.txt")],
         "use a .csv or .npz file name"),
    ]
    for argv, words in cases:
        _one_line_error(capsys, bridge(argv), words, prog="e5jax-bridge")
    assert not (tmp_path / "o.npz").exists()
