"""`lossreg ablate`: swap parsing, variant enumeration, validation before training, a tiny real
ablation (2 variants x 2 seeds) with its summary and resumption, and --jobs 2 as subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lossreg.cli import main
from lossreg.engine import ablate
from lossreg.engine.ablate import (
    AblationError,
    enumerate_variants,
    parse_swaps,
    plan_ablation,
    run_status,
    short_keys,
    split_values,
    summarize,
)
from lossreg.engine.plots import read_metrics
from lossreg.engine.trainer import Trainer
from lossreg.recipe import RecipeError, save_recipe

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@pytest.fixture
def recipe_file(tiny_recipe, tmp_path):
    """The tiny recipe at 2 iterations per run (2 images, batch 2, 2 epochs), evaluated only at the end."""
    recipe = tiny_recipe(train={"epochs": 2, "batch_size": 2, "warmup_iters": 1, "schedule": "cosine", "log_interval": 1},
                         eval={"batch_size": 3, "interval": 10})
    recipe["data"]["train"]["params"]["num_images"] = 2
    recipe["model"]["cls_loss"] = "focal"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _hash(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]


# --------------------------------------------------------------------------- swaps and variants


def test_split_values_only_at_top_level_commas():
    text = "focal, {name: hcra_c, rci_mode: paper},[8, 11] ,'a,b',\"c,\\\"d\""
    assert split_values(text) == ["focal", "{name: hcra_c, rci_mode: paper}", "[8, 11]", "'a,b'", '"c,\\"d"']
    assert split_values("{a: [1, {b: 2}], c: 'x,}'}") == ["{a: [1, {b: 2}], c: 'x,}'}"]
    assert split_values("it's,x,{a: it's, b: 'c,d'}") == ["it's", "x", "{a: it's, b: 'c,d'}"]  # apostrophes


@pytest.mark.parametrize(
    "text, message",
    [
        ("{name: focal", "unclosed {"),
        ("focal}", "unbalanced '}'"),
        ("[a}", "unbalanced '}'"),
        ("'a,b", "unclosed ' quote"),
        ("focal,,qfl", "empty value"),
        ("focal,", "empty value"),
    ],
)
def test_split_values_errors(text, message):
    with pytest.raises(AblationError, match=message):
        split_values(text)


def test_parse_swaps_yaml_values_mappings_and_repeated_keys():
    swaps = parse_swaps([
        "model.cls_loss=focal,{name: hcra_c, rci_mode: paper}",
        "train.optimizer.lr=0.01,0.001",
        "model.cls_loss=qfl",
    ])
    assert [s.key for s in swaps] == ["model.cls_loss", "train.optimizer.lr"]
    assert swaps[0].values == ("focal", {"name": "hcra_c", "rci_mode": "paper"}, "qfl")
    assert swaps[0].texts == ("focal", "{name: hcra_c, rci_mode: paper}", "qfl")
    assert swaps[1].values == (0.01, 0.001) and all(isinstance(v, float) for v in swaps[1].values)


@pytest.mark.parametrize(
    "items, message",
    [
        (["model.cls_loss"], "expected KEY=V1,V2"),
        (["=focal"], "expected KEY=V1,V2"),
        (["model..cls_loss=focal"], "bad swap key"),
        (["model.cls_loss="], "lists no values"),
        (["model.cls_loss=focal,{name: qfl"], "unclosed {"),
        (["model.cls_loss=a: b: c"], "malformed YAML"),
        (["model.cls_loss=focal", "model.cls_loss=qfl,focal"], "value 'focal' is listed twice"),
        (["model.cls_loss+model.assigner=qfl"], r"must be a list of 2 values, one per field"),
        (["model.cls_loss+model.assigner=[qfl, atss, eatss]"], r"must be a list of 2 values"),
        (["model.cls_loss+model.cls_loss=[qfl, vfl]"], "joined twice"),
    ],
)
def test_parse_swaps_errors(items, message):
    with pytest.raises(AblationError, match=message):
        parse_swaps(items)


def test_grid_variants_exact():
    swaps = parse_swaps(["model.cls_loss=focal,qfl", "model.reg_loss=giou,{name: hcra_r, gamma: 1.5}"])
    variants = enumerate_variants(swaps)
    slug = f"hcra_r-gamma-1.5-{_hash({'name': 'hcra_r', 'gamma': 1.5})}"
    assert [v.name for v in variants] == [
        "cls_loss=focal__reg_loss=giou",
        f"cls_loss=focal__reg_loss={slug}",
        "cls_loss=qfl__reg_loss=giou",
        f"cls_loss=qfl__reg_loss={slug}",
    ]
    assert [v.overrides for v in variants] == [
        ("model.cls_loss=focal", "model.reg_loss=giou"),
        ("model.cls_loss=focal", "model.reg_loss={name: hcra_r, gamma: 1.5}"),
        ("model.cls_loss=qfl", "model.reg_loss=giou"),
        ("model.cls_loss=qfl", "model.reg_loss={name: hcra_r, gamma: 1.5}"),
    ]
    assert variants[3].label == "cls_loss=qfl, reg_loss=hcra_r(gamma=1.5)"
    assert variants[3].settings == (("model.cls_loss", "qfl"), ("model.reg_loss", {"name": "hcra_r", "gamma": 1.5}))
    # the same swaps name the same folders every time
    assert [v.name for v in enumerate_variants(swaps)] == [v.name for v in variants]


def test_one_at_a_time_variants_exact():
    swaps = parse_swaps(["model.cls_loss=focal,qfl", "model.reg_loss=giou", "train.optimizer.lr=0.02"])
    variants = enumerate_variants(swaps, one_at_a_time=True)
    assert [(v.name, v.overrides) for v in variants] == [
        ("baseline", ()),
        ("cls_loss=focal", ("model.cls_loss=focal",)),
        ("cls_loss=qfl", ("model.cls_loss=qfl",)),
        ("reg_loss=giou", ("model.reg_loss=giou",)),
        ("optimizer.lr=0.02", ("train.optimizer.lr=0.02",)),
    ]
    with pytest.raises(AblationError, match="at least one --swap"):
        enumerate_variants([])


def test_joined_key_sets_its_fields_together(recipe_file):
    """One variant changing several fields at once (a paper's components together), next to single swaps."""
    swaps = parse_swaps(["model.cls_loss=qfl", "model.cls_loss+model.reg_loss=[hcra_c, {name: hcra_r, gamma: 1.5}]"])
    variants = enumerate_variants(swaps, one_at_a_time=True)
    joined = variants[2]
    assert joined.overrides == ('model.cls_loss="hcra_c"', 'model.reg_loss={"name": "hcra_r", "gamma": 1.5}')
    assert joined.label == "cls_loss+reg_loss=[hcra_c, hcra_r(gamma=1.5)]"
    assert joined.name.startswith("cls_loss+reg_loss=hcra_c-hcra_r-gamma-1.5-")
    plan = plan_ablation(recipe_file, ["model.cls_loss+model.reg_loss=[hcra_c, {name: hcra_r, gamma: 1.5}]"],
                         one_at_a_time=True)
    recipe = plan.recipes[joined.name]
    assert recipe.model.cls_loss.name == "hcra_c" and recipe.model.reg_loss.params == {"gamma": 1.5}
    assert plan.to_dict()["base_values"]["model.cls_loss+model.reg_loss"][0] == plan.base.to_dict()["model"]["cls_loss"]


def test_short_keys_fall_back_to_the_full_key_when_two_read_the_same():
    assert short_keys(["model.cls_loss", "train.epochs"]) == {"model.cls_loss": "cls_loss", "train.epochs": "epochs"}
    assert short_keys(["a.b.c", "d.b.c", "x"]) == {"a.b.c": "a.b.c", "d.b.c": "d.b.c", "x": "x"}


# --------------------------------------------------------------------------- plans


def test_plan_baseline_seeds_and_left_out_duplicates(recipe_file, tmp_path):
    plan = plan_ablation(recipe_file, ["model.cls_loss=qfl,focal"], seeds=3, output_dir=tmp_path / "a")
    assert plan.baseline == "cls_loss=focal" and "the recipe's own setting (cls_loss=focal)" in plan.baseline_note
    assert [(r.dir, r.seed) for r in plan.runs][:4] == [
        ("cls_loss=qfl/seed0", 0), ("cls_loss=focal/seed0", 0), ("cls_loss=qfl/seed1", 1), ("cls_loss=focal/seed1", 1)
    ]
    run = plan.runs[2]
    assert plan.recipe_of(run).train.seed == 1 and plan.recipe_of(run).model.cls_loss.name == "qfl"

    plan = plan_ablation(recipe_file, ["model.cls_loss=qfl,vfl"], seeds=[4, 2])
    assert plan.baseline == "cls_loss=qfl" and "is not among the variants" in plan.baseline_note
    assert plan.seeds == [4, 2] and plan.output_dir == Path("runs/ablate-tiny")

    plan = plan_ablation(recipe_file, ["model.cls_loss=focal,qfl"], one_at_a_time=True, sets=["train.seed=7"])
    assert [v.name for v in plan.variants] == ["baseline", "cls_loss=qfl"]  # focal is the baseline itself
    assert plan.skipped and plan.skipped[0].startswith("cls_loss=focal")
    assert plan.seeds == [7] and plan.recipes["baseline"].train.seed == 7

    with pytest.raises(AblationError, match="--seeds must be >= 1"):
        plan_ablation(recipe_file, ["model.cls_loss=qfl"], seeds=0)
    with pytest.raises(AblationError, match="repeats a seed"):
        plan_ablation(recipe_file, ["model.cls_loss=qfl"], seeds=[1, 1])


def test_unknown_component_fails_before_any_training(recipe_file, tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("nothing may train when a variant is invalid")

    monkeypatch.setattr("lossreg.engine.ablate.run.Trainer", no_training)
    out = tmp_path / "abl"
    argv = ["ablate", str(recipe_file), "--swap", "model.cls_loss=focal,qfl", "--swap", "model.reg_loss=giou,gioux",
            "--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "variant cls_loss=focal, reg_loss=gioux: model.reg_loss.name: unknown loss 'gioux'" in err
    assert not out.exists()
    with pytest.raises(RecipeError) as exc:
        plan_ablation(recipe_file, ["model.cls_loss=focal,focall"])
    assert str(exc.value).startswith("variant cls_loss=focall: model.cls_loss.name: unknown loss 'focall'")


def test_run_folder_of_another_recipe_is_refused(recipe_file, tmp_path):
    plan = plan_ablation(recipe_file, ["model.cls_loss=focal,qfl"], output_dir=tmp_path / "abl")
    run = plan.runs[1]
    save_recipe(plan.recipe_of(run).with_overrides(["train.epochs=5"]), plan.run_dir(run) / "recipe.yaml")
    with pytest.raises(AblationError, match=r"cls_loss=qfl/seed0 was trained with a different recipe \(train.epochs: 5"):
        ablate.statuses(plan)


def test_torchrun_needs_one_job(recipe_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["ablate", str(recipe_file), "--swap", "model.cls_loss=focal,qfl", "--jobs", "2",
                 "--output", str(tmp_path / "abl")]) == 2
    err = capsys.readouterr().err
    assert "under torchrun (2 processes)" in err and "--jobs must be 1, got 2" in err


def test_ablate_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ablate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for piece in ("--swap", "--one-at-a-time", "--seeds", "--seed-list", "--jobs", "--set", "--output", "--device",
                  "--summary-only", "--dry-run", "ablation.md", "score_iou_grid.png", "torchrun", "examples:"):
        assert piece in text, piece


# --------------------------------------------------------------------------- the summary


def _fmt(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    mean = f"{100 * statistics.mean(vals):.1f}"
    return mean if len(vals) == 1 else f"{mean} ± {100 * statistics.stdev(vals):.1f}"


def _table(markdown: str) -> dict[str, dict[str, str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = {}
    for line in rows[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        out[cells[header[0]]] = cells
    return out


def _expected_row(out: Path, variant: str, seeds: list[int]) -> dict[str, str]:
    runs = [json.loads((out / variant / f"seed{s}" / "metrics.json").read_text()) for s in seeds]
    evals = [json.loads((out / variant / f"seed{s}" / "eval-val" / "metrics.json").read_text()) for s in seeds]
    row = {k: _fmt([r[k] for r in runs]) for k in METRICS}
    rs = [e["score_iou_correlation"] for e in evals if e["score_iou_correlation"] is not None]
    row["score-IoU r"] = "–" if not rs else (
        f"{statistics.mean(rs):.3f}" if len(rs) == 1 else f"{statistics.mean(rs):.3f} ± {statistics.stdev(rs):.3f}")
    row["runs"] = f"{len(runs)}/{len(seeds)}"
    return row


def test_summary_numbers_are_the_run_folders_means_and_stds(recipe_file, tmp_path):
    """Hand-written run folders with varied numbers: the table, ΔAP and ablation.json follow them exactly."""
    out = tmp_path / "abl"
    plan = plan_ablation(recipe_file, ["model.cls_loss=qfl,focal"], seeds=3, output_dir=out)
    ablate.write_plan(plan)
    numbers = {
        "cls_loss=qfl": [0.412, 0.398, 0.431],
        "cls_loss=focal": [0.371, 0.385, None],  # seed 2 not finished
    }
    for variant, aps in numbers.items():
        for seed, ap in enumerate(aps):
            if ap is None:
                continue
            run = out / variant / f"seed{seed}"
            (run / "eval-val").mkdir(parents=True)
            metrics = {"AP": ap, "AP50": ap + 0.2 + seed / 100, "AP75": ap - 0.05, "APs": None if seed else 0.1,
                       "APm": ap / 2, "APl": ap * 1.5, "per_class": {}, "train_seconds": 100.0 + 10 * seed}
            (run / "metrics.json").write_text(json.dumps(metrics))
            (run / "eval-val" / "metrics.json").write_text(json.dumps({"score_iou_correlation": 0.3 + ap / 10 * seed}))
    summary = summarize(out)
    table = _table((out / "ablation.md").read_text())
    assert list(table) == ["qfl", "focal"]
    for variant, seeds in (("cls_loss=qfl", [0, 1, 2]), ("cls_loss=focal", [0, 1])):
        row = table[variant.split("=")[1]]
        expected = _expected_row(out, variant, seeds)
        assert {k: row[k] for k in expected} == {**expected, "runs": f"{len(seeds)}/3"}
    assert table["qfl"]["APs"] == "10.0"  # the only seed where APs is defined: no ±
    assert table["focal"]["ΔAP"] == "baseline"
    delta = 100 * (statistics.mean(numbers["cls_loss=qfl"]) - statistics.mean([0.371, 0.385]))
    assert table["qfl"]["ΔAP"] == f"{delta:+.1f}" == "+3.6"
    assert table["qfl"]["time/run"] == "110.0 s"
    # paired over the seeds both finished (0, 1): differences 4.1 and 1.3 points, t(1 dof) = 12.706
    diffs = [41.0, 13.0]  # in 0.1 points
    half = 12.706 * statistics.stdev(diffs) / 2 ** 0.5 / 10
    assert table["qfl"]["paired ΔAP (95% CI)"] == f"+2.7 [{2.7 - half:+.1f}, {2.7 + half:+.1f}]" == "+2.7 [-15.1, +20.5]"
    assert table["focal"]["paired ΔAP (95% CI)"] == "" and table["qfl"]["verdict"] == "no effect resolvable"
    saved = json.loads((out / "ablation.json").read_text())
    qfl = next(v for v in saved["variants"] if v["name"] == "cls_loss=qfl")
    assert qfl["paired_AP"]["seeds"] == [0, 1] and qfl["paired_AP"]["diffs"] == pytest.approx([0.041, 0.013])
    assert [r["metrics"]["AP"] for r in qfl["runs"]] == numbers["cls_loss=qfl"]
    assert qfl["stats"]["AP"]["std"] == pytest.approx(statistics.stdev(numbers["cls_loss=qfl"]))
    assert saved["baseline"] == "cls_loss=focal" and summary["table"] in (out / "ablation.md").read_text()
    assert "Not finished: `cls_loss=focal/seed2`" in (out / "ablation.md").read_text()
    for png in ("ablation_ap.png", "score_iou_grid.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")


def test_verdict_from_the_paired_interval():
    from lossreg.engine.ablate.summary import verdict

    assert verdict({"mean": 0.02, "ci95": 0.01}) == "helped"
    assert verdict({"mean": -0.02, "ci95": 0.015}) == "hurt"
    assert verdict({"mean": 0.02, "ci95": 0.03}) == "no effect resolvable"
    assert verdict({"mean": 0.02, "ci95": None}) == verdict(None) == "–"


def test_one_at_a_time_of_two_keys_prints_one_table_per_key(recipe_file, tmp_path):
    """The papers' layout: each key's table holds the baseline row, then only the variants changing that key."""
    out = tmp_path / "abl"
    plan = plan_ablation(recipe_file, ["model.cls_loss=qfl,vfl", "model.reg_loss=eiou"], one_at_a_time=True,
                         output_dir=out)
    ablate.write_plan(plan)
    aps = {"baseline": 0.30, "cls_loss=qfl": 0.33, "cls_loss=vfl": 0.28, "reg_loss=eiou": 0.35}
    assert sorted(v.name for v in plan.variants) == sorted(aps)
    for variant, ap in aps.items():
        run = out / variant / "seed0"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"AP": ap, "train_seconds": 1.0}))
    summary = summarize(out)
    tables = summary["table"].split("\n\n")
    assert len(tables) == 2 and summary["table"] in (out / "ablation.md").read_text()
    cls, reg = _table(tables[0]), _table(tables[1])
    assert tables[0].startswith("| cls_loss | AP |") and tables[1].startswith("| reg_loss | AP |")
    assert list(cls) == ["focal", "qfl", "vfl"] and list(reg) == ["(default)", "eiou"]  # the tiny recipe leaves reg_loss unset
    assert cls["focal"]["ΔAP"] == reg["(default)"]["ΔAP"] == "baseline"
    assert (cls["qfl"]["ΔAP"], cls["vfl"]["ΔAP"], reg["eiou"]["ΔAP"]) == ("+3.0", "-2.0", "+5.0")
    assert cls["qfl"]["AP"] == "33.0" and reg["(default)"]["AP"] == cls["focal"]["AP"] == "30.0"


def test_tiny_ablation_trains_summarizes_and_resumes(recipe_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "abl"
    argv = ["ablate", str(recipe_file), "--swap", "model.cls_loss=focal,qfl", "--seeds", "2", "--output", str(out)]
    # a half-finished run: one of its two iterations done, its checkpoint written
    plan = plan_ablation(recipe_file, ["model.cls_loss=focal,qfl"], seeds=2, output_dir=out)
    half = plan.runs[2]
    assert half.dir == "cls_loss=focal/seed1"
    assert Trainer(plan.recipe_of(half), output_dir=plan.run_dir(half), progress=False).train(max_iterations=1) is None
    assert run_status(plan.run_dir(half), "eval-val") == "resume"

    assert main([*argv, "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "grid 2 = 2 variants x 2 seed(s) [0, 1] = 4 runs" in listing
    assert [line.split()[1] for line in listing.splitlines() if "/seed" in line] == ["new", "new", "resume", "new"]
    assert not (out / "ablation_plan.json").exists()  # a dry run writes nothing

    calls = []

    class Counting(Trainer):
        def __init__(self, *args, **kwargs):
            calls.append((Path(kwargs["output_dir"]).relative_to(out).as_posix(), kwargs["resume"]))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("lossreg.engine.ablate.run.Trainer", Counting)
    assert main(argv) == 0
    assert calls == [("cls_loss=focal/seed0", None), ("cls_loss=qfl/seed0", None),
                     ("cls_loss=focal/seed1", True), ("cls_loss=qfl/seed1", None)]
    printed = capsys.readouterr().out
    markdown = (out / "ablation.md").read_text()
    table = markdown[markdown.index("| cls_loss"):].split("\n\n")[0]
    assert table in printed
    resumed = [r["iter"] for r in read_metrics(plan.run_dir(half) / "metrics.jsonl") if r["type"] == "train"]
    assert resumed == [1, 2]
    for run in plan.runs:
        folder = plan.run_dir(run)
        assert json.loads((folder / "metrics.json").read_text())["iterations"] == 2
        assert (folder / "model" / "model.safetensors").is_file()
        for name in ("metrics.json", "detections.json", "score_iou.png", "score_iou_pairs.npz"):
            assert (folder / "eval-val" / name).is_file(), name
        assert run_status(folder, "eval-val") == "done"
    for name in ("ablation.md", "ablation.json", "ablation_ap.png", "score_iou_grid.png", "ablation_plan.json"):
        assert (out / name).is_file(), name
    rows = _table(markdown)
    for variant in ("focal", "qfl"):
        expected = _expected_row(out, f"cls_loss={variant}", [0, 1])
        assert {k: rows[variant][k] for k in expected} == expected
    assert rows["focal"]["ΔAP"] == "baseline" and "Baseline: the recipe's own setting (cls_loss=focal)" in markdown
    saved = json.loads((out / "ablation.json").read_text())
    assert [r["metrics"]["train_seconds"] for r in saved["variants"][1]["runs"]] == [
        json.loads((out / "cls_loss=qfl" / f"seed{s}" / "metrics.json").read_text())["train_seconds"] for s in (0, 1)]

    # again: everything is finished, nothing trains or evaluates; the summary is rebuilt
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/**/metrics.json")}
    assert len(stamps) == 8
    calls.clear()
    monkeypatch.setattr("lossreg.engine.ablate.run.evaluate_run",
                        lambda *a, **k: pytest.fail("a finished run was evaluated again"))
    (out / "ablation.md").unlink()
    assert main(argv) == 0
    assert calls == [] and {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "ablation.md").read_text() == markdown
    (out / "ablation.md").unlink()
    assert main([*argv, "--summary-only"]) == 0 and calls == []
    assert (out / "ablation.md").read_text() == markdown


def test_jobs_2_runs_subprocesses_in_parallel(recipe_file, tmp_path):
    out = tmp_path / "abl"
    cmd = [sys.executable, "-m", "lossreg", "ablate", str(recipe_file), "--swap", "model.cls_loss=focal,qfl",
           "--jobs", "2", "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [line.split()[2] for line in proc.stderr.splitlines() if line.startswith("lossreg ablate: ")
              and line.split()[2] in ("started", "finished")]
    assert events == ["started", "started", "finished", "finished"]  # both trained at once
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    for variant in ("focal", "qfl"):
        run = out / f"cls_loss={variant}" / "seed0"
        assert json.loads((run / "metrics.json").read_text())["iterations"] == 2
        log = (run / "ablate.log").read_text()
        assert f"worker cls_loss={variant}/seed0: {max(1, cores // 2)} torch threads" in log
        assert (run / "eval-val" / "score_iou_pairs.npz").is_file()
    assert "| cls_loss | AP | AP50 |" in proc.stdout and (out / "ablation.md").is_file()


@pytest.mark.slow  # ~15-20 s: over this file's budget; run with -m slow
def test_torchrun_ablation_two_cpu_processes(tiny_recipe, tmp_path):
    recipe = tiny_recipe(train={"epochs": 1, "batch_size": 4, "warmup_iters": 1}, eval={"batch_size": 3})
    recipe["data"]["train"]["params"]["num_images"] = 4
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lossreg",
           "ablate", str(path), "--swap", "model.cls_loss=focal,qfl", "--output", "out"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("x 2 processes") == 2 and proc.stdout.count("| cls_loss | AP |") == 1  # rank 0 only
    for variant in ("focal", "qfl"):
        run = tmp_path / "out" / f"cls_loss={variant}" / "seed0"
        assert json.loads((run / "metrics.json").read_text())["iterations"] == 1
        assert (run / "eval-val" / "score_iou_pairs.npz").is_file()


def test_results_archive_lets_a_new_machine_skip_finished_runs(recipe_file, tmp_path, monkeypatch):
    results = tmp_path / "docs" / "results" / "tiny"
    first = tmp_path / "machine1"
    argv = ["ablate", str(recipe_file), "--swap", "model.cls_loss=focal,qfl", "--results", str(results)]
    assert main([*argv, "--output", str(first)]) == 0
    archived = sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file())
    assert archived == [f"cls_loss={v}/seed0/{f}" for v in ("focal", "qfl") for f in
                        ("eval-val/metrics.json", "eval-val/score_iou_pairs.npz", "metrics.json", "recipe.yaml")]
    assert sum(p.stat().st_size for p in results.rglob("*") if p.is_file()) < 200_000  # no checkpoints, no model
    markdown = (first / "ablation.md").read_text()

    # a new machine: no run folders, the archive only; one more variant is planned
    monkeypatch.setattr("lossreg.engine.ablate.run.Trainer",
                        lambda *a, **k: pytest.fail("an archived run was trained again"))
    second = tmp_path / "machine2"
    assert main([*argv, "--output", str(second), "--summary-only"]) == 0
    assert (second / "ablation.md").read_text() == markdown.replace(str(first), str(second))
    trained = []

    class Recording(Trainer):
        def __init__(self, *args, **kwargs):
            trained.append(Path(kwargs["output_dir"]).relative_to(second).as_posix())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("lossreg.engine.ablate.run.Trainer", Recording)
    assert main(["ablate", str(recipe_file), "--swap", "model.cls_loss=focal,qfl,vfl", "--results", str(results),
                 "--output", str(second)]) == 0
    assert trained == ["cls_loss=vfl/seed0"]
    assert (results / "cls_loss=vfl" / "seed0" / "metrics.json").is_file()  # archived as it finished


def test_results_archive_of_another_recipe_is_refused(recipe_file, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["ablate", str(recipe_file), "--swap", "model.cls_loss=focal", "--results", str(results),
                 "--output", str(tmp_path / "a")]) == 0
    code = main(["ablate", str(recipe_file), "--swap", "model.cls_loss=focal", "--set", "train.epochs=3",
                 "--results", str(results), "--output", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and f"{results / 'cls_loss=focal' / 'seed0'} was trained with a different recipe" in err
    assert not (tmp_path / "b" / "cls_loss=focal").exists()  # nothing restored from a mismatching archive


def test_parallel_runs_are_archived_as_each_finishes(recipe_file, tmp_path, monkeypatch):
    """--jobs 2 with --results: a finished run reaches the archive before the others end (a stopped session keeps it)."""
    from lossreg.engine.ablate import run as run_module

    plan = plan_ablation(recipe_file, ["model.cls_loss=focal,qfl,vfl"], output_dir=tmp_path / "out")
    ablate.write_plan(plan)
    finished_when: dict[str, list[str]] = {}

    class FakeProc:
        """Ends at once; vfl fails. A successful one leaves the files a real run writes."""

        def __init__(self, cmd, **kwargs):
            self.dir = cmd[cmd.index("--worker") + 2]
            self.code = 1 if "vfl" in self.dir else 0
            if self.code == 0:
                folder = plan.output_dir / self.dir
                (folder / "eval-val").mkdir(parents=True, exist_ok=True)
                (folder / "metrics.json").write_text(json.dumps({"AP": 0.5}))
                (folder / "recipe.yaml").write_text("name: tiny\n")
                (folder / "eval-val" / "metrics.json").write_text("{}")

        def poll(self):
            return self.code

        def terminate(self):  # pragma: no cover - nothing is left running
            pass

    monkeypatch.setattr(run_module.subprocess, "Popen", FakeProc)
    real_archive = run_module.archive_run

    def spy(src, dst, eval_dir):
        finished_when[Path(dst).relative_to(tmp_path / "results").as_posix()] = sorted(
            p.parent.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("metrics.json")
            if p.parent.name.startswith("seed"))
        return real_archive(src, dst, eval_dir)

    monkeypatch.setattr(run_module, "archive_run", spy)
    summary = run_module.run_ablation(plan, jobs=2, say=lambda line: None, results=tmp_path / "results")
    assert summary["failed"] == ["cls_loss=vfl/seed0"]
    assert list(finished_when) == ["cls_loss=focal/seed0", "cls_loss=qfl/seed0"]  # each as it finished
    assert finished_when["cls_loss=qfl/seed0"] == ["cls_loss=focal/seed0"]  # focal archived before qfl ended
    assert (tmp_path / "results" / "cls_loss=qfl" / "seed0" / "metrics.json").is_file()
