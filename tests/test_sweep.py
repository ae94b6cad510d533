"""e5jax sweep: bad specs refused cleanly; trial rows scored and chosen on the tuning split; a rerun continues;
trial rows sharded over 2 processes x 2 CPU devices give the one-device results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_known_oracle_table, run_job
from e5jax.cli import main as cli_main
from e5jax.methods import METHODS, grpo, ppo
from e5jax.sweep.phases import choose, sweep_rows
from e5jax.sweep.spec import draw_trials, edge_report, load_spec, widen

ROOT = Path(__file__).resolve().parents[1]
BASE = """[run]
seeds = 2
methods = ["lut", "ppo"]
total_env_steps = 1024
env_steps_per_update = 64
eval_every = 8
"""
SPEC = """[sweep]
config = "{base}"
methods = ["ppo"]
trials = 3
seeds = 2
final_seeds = 2
lams = [1.0, 4.0]
phases = {phases}
[space.ppo]
lr = {{log = [1e-4, 1e-2]}}
clip_eps = [0.1, 0.3]
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    make_known_oracle_table(R=60).save(d / "t.npz")
    (d / "base.toml").write_text(BASE)
    for tag, ph in (("full", '["tune", "compare", "lambda"]'), ("tune", '["tune", "lambda"]')):
        (d / f"{tag}.toml").write_text(SPEC.format(base=d / "base.toml", phases=ph))
    # the device test: learning rates where PPO trains stably (docs/sweep.md: at lr ~6e-3 the partitioned program's
    # float rounding, amplified by unstable training, makes a row drift)
    (d / "tune.toml").write_text((d / "tune.toml").read_text().replace("[1e-4, 1e-2]", "[1e-4, 1e-3]")
                                 .replace("phases =", "widen_rounds = 0\nphases ="))
    return d


def _sweep(files, spec, out, *extra):
    return cli_main(["sweep", "--config", str(files / spec), "--table", str(files / "t.npz"), "--out", str(out),
                     "--no-progress", *extra])


BAD = [
    ("[space.ppo]\nhidden = [[64]]", "is static"),
    ("[space.ppo]\nfoo = [1.0]", "unknown hyperparameter"),
    ("[space.ppo]\nlr = {log = [1e-2, 1e-4]}", "empty range"),
    ("[space.ppo]\nlr = [-1e-3, 1e-3]", "must be > 0"),
    ("[space.ppo]\nlr = []", "empty list"),
    ("[space.ppo]\nlr = {normal = [0, 1]}", "give {log"),
    ("[sweep]\ntrails = 3", "unknown key 'trails'"),
    ("[sweep]\nmethods = [\"lut\"]\n[space.lut]\nlr = [1e-3]", "training-free"),
    ("[sweep]\nsearch = \"grid\"\ntrials = 5\n[space.ppo]\nlr = [1e-3, 1e-4]", "grid has 2 points"),
    ("[sweep]\nlams = [-1.0]", "lams must be"),
]


@pytest.mark.parametrize("extra,words", BAD, ids=[w for _, w in BAD])
def test_bad_spec_one_line_exit_2_nothing_written(tmp_path, capsys, files, extra, words):
    base = {"sweep": {"config": f'"{files / "base.toml"}"', "methods": '["ppo"]', "trials": "3"},
            "space.ppo": {"lr": "{log = [1e-4, 1e-2]}"}}
    for block in extra.split("\n["):
        sec, *lines = block.strip("[").split("\n")
        sec = sec.strip("]")
        base.setdefault(sec, {})
        if sec == "space.ppo":
            base[sec] = {}
        for ln in lines:
            k, v = ln.split(" = ", 1)
            base[sec][k] = v
    (tmp_path / "bad.toml").write_text("".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items())
                                               for s, kv in base.items()))
    out = tmp_path / "out"
    rc = cli_main(["sweep", "--config", str(tmp_path / "bad.toml"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0] and "Traceback" not in err[0], err
    assert not out.exists()


def test_random_trials_default_first_and_reproducible(files):
    spec = load_spec(files / "full.toml")
    from e5jax.methods import ppo

    a = draw_trials(spec, "ppo", ppo.Config())
    assert a == draw_trials(spec, "ppo", ppo.Config()) and len(a) == 3
    assert a[0] == {"lr": 3e-4, "clip_eps": 0.2}  # trial 0: the defaults
    assert all(1e-4 <= t["lr"] <= 1e-2 and t["clip_eps"] in (0.1, 0.3) for t in a[1:])


def test_sweep_end_to_end_and_rerun_continues(tmp_path, files, capsys):
    out = tmp_path / "sw"
    assert _sweep(files, "full.toml", out) == 0
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["complete"] and (out / "summary.md").is_file()
    assert (out / "figures/sweep_scores.png").is_file() and (out / "figures/lam_robustness.png").is_file()
    t = doc["tune"]["ppo"]
    finals = [x["final_mean"] for x in t["trials"]]
    aucs = [x["auc_mean"] for x in t["trials"]]
    assert t["chosen_trial"] == {"final": int(np.argmax(finals)), "auc": int(np.argmax(aucs))}
    assert t["rows"] == 6 * t["rounds"] and len(t["trials"]) == 3 * t["rounds"] and len(t["spaces"]) == t["rounds"]
    assert len(set(np.round(finals, 6))) > 1  # trials differ: their settings reached the program
    # every method runs 1 + widen_rounds (1) rounds, an equal budget; a range changes only where a chosen value
    # sat at its edge
    assert t["rounds"] == 2 and len({json.dumps(x["settings"]) for x in t["trials"]}) == 6
    _, first = choose([x for x in t["trials"] if x["round"] == 0])
    at_edge = {h["hyperparameter"] for h in edge_report(load_spec(files / "full.toml"), "ppo", t["spaces"][0], first)
               if h["widened_to"] is not None}
    assert {k for k in t["spaces"][0] if t["spaces"][1][k] != t["spaces"][0][k]} == at_edge
    assert not at_edge  # so the second round is the equal budget's, not a widening's
    assert {"default", "tuned_final", "tuned_auc"} <= set(doc["compare"]["ppo"]) and "tuned_final" not in doc["compare"]["lut"]
    assert doc["compare"]["ppo"]["tuned_final"]["settings"] == t["chosen"]["final"]
    assert doc["compare"]["ppo"]["tuned_auc"]["settings"] == t["chosen"]["auc"]
    cost = doc["compare"]["ppo"]["default"]["cost"]
    assert cost["s_per_update"] > 0 and cost == doc["compare"]["ppo"]["tuned_final"]["cost"]  # same static program
    ans = doc["answers"]
    assert set(ans) == {"final_utility", "auc", "slo_violation", "stability"}
    a = ans["final_utility"]
    assert a["tuned"]["settings"] == {"lut": "default", "ppo": "tuned_final"} and ans["auc"]["tuned"]["settings"]["ppo"] == "tuned_auc"
    for res in (a["default"], a["tuned"]):  # every method's two-level CI contains its value; the winner set is not empty
        assert res["winners"] and res["best"] in res["winners"]
        for r in res["methods"].values():
            assert r["ci_two_level"][0] <= r["value"] <= r["ci_two_level"][1]
    lam = doc["lambda"]
    assert lam["lams"] == [1.0, 4.0] and len(lam["methods"]["lut"]["slo"]) == 2
    assert lam["methods"]["ppo"]["per_lambda"] == [t["chosen"]["final"]] * 2  # the lambda = 2 tuned setting
    assert lam["oracle"]["slo"][0] >= lam["oracle"]["slo"][1]  # a larger penalty: the oracle overshoots less
    c = doc["lambda_conclusions"]
    v = c["pairs"]["lut vs ppo"]
    assert v["where"] == {x: c["per_lambda"][x]["pairs"]["lut vs ppo"] for x in ("1", "4")}
    assert v["verdict"] == ("holds" if len(set(v["where"].values())) == 1 and "unresolved" not in v["where"].values()
                            else "flips" if set(v["where"].values()) == {">", "<"} else "unresolved")
    text = (out / "summary.md").read_text()
    assert "Robustness to lambda" in text and "Winner set per lambda" in text and "s / update" in text
    capsys.readouterr()
    assert _sweep(files, "full.toml", out) == 0  # rerun: everything is on disk, nothing retrains
    assert "continuing" in capsys.readouterr().out
    assert json.loads((out / "sweep.json").read_text())["tune"] == doc["tune"]


def test_sweep_rows_compiled_out_beta():
    """GRPO with every row at beta = 0 (one trial, or a tuned beta of 0): the KL term stays compiled out and beta is
    left out of the rows (the state offers no traced beta); one row with beta > 0 switches it on for all rows."""
    zero = [{"lr": 3e-4, "clip_eps": 0.2, "beta": 0.0}]
    cfg, hp = sweep_rows("grpo", grpo.Config(), zero, 3)
    assert cfg.beta == 0.0 and set(hp) == {"lr", "clip_eps"} and hp["lr"].shape == (3,)
    cfg, hp = sweep_rows("grpo", grpo.Config(), zero + [{"lr": 1e-3, "clip_eps": 0.1, "beta": 0.01}], 2)
    assert cfg.beta == 1.0 and np.allclose(hp["beta"], [0, 0, 0.01, 0.01]) and np.allclose(hp["lr"][2:], 1e-3)
    cfg, hp = sweep_rows("ppo", ppo.Config(), [{"lr": 1e-3, "ent_coef": 0.0}], 1)
    assert cfg == ppo.Config() and set(hp) == {"lr", "ent_coef"}


def test_edges_widen_until_a_hard_bound():
    from e5jax.sweep.spec import SweepSpec

    sp = SweepSpec(space={"ppo": {}})
    space = {"lr": {"log": [1e-4, 1e-2]}, "clip_eps": {"uniform": [0.1, 0.3]}, "ent_coef": {"uniform": [0.0, 0.1]}}
    chosen = {"final": {"lr": 9e-3, "clip_eps": 0.2, "ent_coef": 0.001}, "auc": {"lr": 1e-3, "clip_eps": 0.11,
                                                                               "ent_coef": 0.05}}
    hits = {(h["select"], h["hyperparameter"]): h for h in edge_report(sp, "ppo", space, chosen)}
    assert set(hits) == {("final", "lr"), ("final", "ent_coef"), ("auc", "clip_eps")}  # 1e-3 is mid-range in log
    assert hits[("final", "lr")]["edge"] == "high" and hits[("final", "lr")]["widened_to"] == {"log": [1e-4, 1e-1]}
    assert hits[("final", "ent_coef")]["widened_to"] is None  # 0 is a hard bound: nothing to widen
    assert hits[("auc", "clip_eps")]["widened_to"] == {"uniform": [0.05, 0.3]}  # clip_eps > 0: halved, not negative
    grid = edge_report(sp, "ppo", {"clip_eps": [0.1, 0.2, 0.3]}, {"final": {"clip_eps": 0.3}})
    assert len(grid) == 1 and grid[0]["edge"] == "high" and grid[0]["widened_to"] is None  # a list: reported, not widened
    assert widen({"uniform": [0.0, 0.3]}, "high", METHODS["dpo"].traced["label_smoothing"])["uniform"] == pytest.approx([0.0, 0.45])
    assert widen({"uniform": [0.0, 0.4]}, "high", METHODS["dpo"].traced["label_smoothing"]) == {"uniform": [0.0, 0.49]}  # < 0.5


def test_two_processes_identical_to_one(tmp_path, files):
    """Trial rows (3 trials x 2 seeds = 6, padded to 8) sharded over 2 processes x 2 CPU devices (jax.distributed,
    the command of docs/sweep.md): the same scores as one process on one device; process 0 alone writes. The tune
    phase only (the lambda phase's rows go through the same sharding; tests/test_distributed.py covers a run)."""
    spec = files / "tune_only.toml"
    spec.write_text((files / "tune.toml").read_text().replace('phases = ["tune", "lambda"]', 'phases = ["tune"]'))
    assert _sweep(files, spec.name, tmp_path / "d1") == 0
    job = run_job(["sweep", "--config", str(spec), "--table", str(files / "t.npz"), "--out",
                   str(tmp_path / "d22"), "--no-progress"], cwd=ROOT)
    assert [r.returncode for r in job] == [0, 0], job[0].stderr[-2000:] + job[1].stderr[-2000:]
    assert "scores vs hyperparameters" in job[0].stdout and "scores vs hyperparameters" not in job[1].stdout
    res = {n: json.loads((tmp_path / n / "sweep.json").read_text()) for n in ("d1", "d22")}
    assert len(res["d22"]["meta"]["devices"]) == 4 and len(res["d1"]["meta"]["devices"]) == 1
    for a, b in zip(res["d1"]["tune"]["ppo"]["trials"], res["d22"]["tune"]["ppo"]["trials"], strict=True):
        np.testing.assert_allclose(a["final_per_seed"], b["final_per_seed"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["auc_per_seed"], b["auc_per_seed"], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "d22").iterdir()) == sorted(p.name for p in (tmp_path / "d1").iterdir())


def test_retune_tunes_at_every_lambda(tmp_path, files):
    """retune = true: a tune phase per lambda (its own scores), and the lambda phase uses each lambda's choice."""
    spec = (files / "full.toml").read_text().replace('phases = ["tune", "compare", "lambda"]',
                                                     'retune = true\nwiden_rounds = 0\nphases = ["tune", "lambda"]')
    (tmp_path / "retune.toml").write_text(spec)
    out = tmp_path / "rt"
    assert cli_main(["sweep", "--config", str(tmp_path / "retune.toml"), "--table", str(files / "t.npz"), "--out",
                     str(out), "--no-progress"]) == 0
    doc = json.loads((out / "sweep.json").read_text())
    t1, t4 = doc["tune_lam1"]["ppo"], doc["tune_lam4"]["ppo"]
    assert (t1["lam"], t4["lam"]) == (1.0, 4.0)
    assert [x["settings"] for x in t1["trials"]] == [x["settings"] for x in t4["trials"]]  # same trials ...
    assert [x["final_mean"] for x in t1["trials"]] != [x["final_mean"] for x in t4["trials"]]  # ... scored at its lambda
    m = doc["lambda"]["methods"]["ppo"]
    assert m["setting"] == "tuned_final at each lambda" and m["per_lambda"] == [t1["chosen"]["final"], t4["chosen"]["final"]]
