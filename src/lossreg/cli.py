"""The ``lossreg`` command line.

Subcommands: ``list`` (components, models, pretrained weights, recipes),
``info`` (one component's parameters, paper and documentation, or a recipe),
``check`` (validate a recipe with ``--set`` overrides and print it resolved),
``train`` (train a recipe's detector into a run folder; see :mod:`lossreg.engine`),
``eval`` (COCO metrics, precision-recall curves and the score-IoU plot of a trained
model on a COCO JSON, a VOC folder or its recipe's validation split), ``predict``
(detections on image files, drawn and as JSON), ``push`` (publish to the Hub) and
``ablate`` (train every combination of swapped recipe settings over several seeds and
tabulate them; see :mod:`lossreg.engine.ablate`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ._factory import list_models
from ._registry import KINDS, REQUIRED, UnknownComponentError, component_info, list_components, list_pretrained
from ._version import __version__
from .hub import HubError
from .recipe import RecipeError, find_recipe, list_recipes, load_recipe

_EXTRA_KINDS = ("model", "pretrained", "recipe")
_PLURALS = {"losses": "loss", "models": "model", "recipes": "recipe"}
_PLURALS.update({f"{k}s": k for k in KINDS})


class CliError(Exception):
    """A user error the command reports in one line, without a traceback."""


def _kind(text: str) -> str:
    kind = _PLURALS.get(text, text)
    if kind not in KINDS + _EXTRA_KINDS:
        raise UnknownComponentError("kind", text, KINDS + _EXTRA_KINDS, hint="`lossreg list` shows every kind")
    return kind


def _names(kind: str, pattern: str | None, describe: bool) -> list[Any]:
    if kind == "model":
        return list_models(pattern or "*")
    if kind == "pretrained":
        names = list_pretrained(pattern or "*")
        if describe:
            return [(n, _pretrained_description(n)) for n in names]
        return names
    if kind == "recipe":
        names = list_recipes(pattern or "*")
        if describe:
            return [(n, _recipe_description(n)) for n in names]
        return names
    return list_components(kind, pattern, with_description=describe)


def _pretrained_description(name: str) -> str:
    from ._registry import get_pretrained_cfg

    cfg = get_pretrained_cfg(*name.rsplit(".", 1))
    metrics = " ".join(f"{k}={v:.3f}" for k, v in cfg.metrics.items())
    return f"hf-hub:{cfg.hf_hub_id}  {cfg.description}{f'  [{metrics}]' if metrics else ''}"


def _recipe_description(name: str) -> str:
    try:
        return load_recipe(name, validate=False).description.strip().splitlines()[0]
    except (RecipeError, IndexError):
        return ""


def cmd_list(args: argparse.Namespace) -> int:
    if args.kind is None:
        for kind in KINDS + _EXTRA_KINDS:
            names = _names(kind, args.pattern, describe=False)
            print(f"{kind} ({len(names)}): {', '.join(names) if names else '-'}")
        return 0
    kind = _kind(args.kind)
    items = _names(kind, args.pattern, args.describe)
    if args.describe and kind != "model":
        width = max((len(n) for n, _ in items), default=0)
        for name, desc in items:
            print(f"{name:<{width}}  {desc}")
    else:
        for name in items:
            print(name)
    if not items:
        print(f"no {kind} matches {args.pattern!r}" if args.pattern else f"no {kind} is registered", file=sys.stderr)
    return 0


def _format_info(info: dict[str, Any]) -> str:
    lines = [f"{info['kind']} {info['name']!r}"]
    if info.get("task"):
        lines.append(f"  task:  {info['task']}")
    if info.get("paper"):
        lines.append(f"  paper: {info['paper']}")
    extra = {k: v for k, v in info.items() if k not in ("name", "kind", "task", "params", "doc", "paper")}
    for key, value in extra.items():
        lines.append(f"  {key}: {value}")
    lines.append("  parameters:")
    for key, value in info["params"].items():
        lines.append(f"    {key} = {'(required)' if value is REQUIRED else repr(value)}")
    if info.get("doc"):
        lines.append("")
        lines.extend("  " + line if line else "" for line in info["doc"].splitlines())
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    if kind == "recipe":
        path = find_recipe(args.name)
        recipe = load_recipe(path, validate=False)
        print(f"# {path}")
        print(json.dumps(recipe.to_dict(), indent=2) if args.json else recipe.to_yaml(), end="")
        return 0
    if kind in ("model", "pretrained"):
        raise CliError(f"`lossreg info {kind}` is not available; use `lossreg list {kind}` to see the names")
    info = component_info(kind, args.name)
    if args.json:
        info = {**info, "params": {k: (None if v is REQUIRED else v) for k, v in info["params"].items()}}
        print(json.dumps(info, indent=2, default=repr))
    else:
        print(_format_info(info))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, overrides=args.set or (), validate=not args.schema_only)
    if not (args.schema_only or args.no_data):
        from .recipe.data_paths import check_data_paths

        check_data_paths(recipe)  # the data must be on this machine for the recipe to train here
    print(recipe.to_yaml(), end="")
    where = "" if args.schema_only or args.no_data else " and its data paths exist"
    print(f"# recipe {recipe.name!r} is valid{where}", file=sys.stderr)
    return 0


_TRAIN_DESCRIPTION = """Train the detector of a recipe and evaluate it on the recipe's validation split.

The run folder (--output, default runs/<recipe>-<time>) receives:
  recipe.yaml        the resolved recipe (seed and library versions in its header)
  metrics.jsonl      per iteration: each task loss, the balancer's weights, lr; per evaluation: COCO AP
  checkpoints/       last.safetensors + last.state.pt each epoch (epoch_NNNN.* every
                     train.checkpoint_interval epochs), written crash-safely
  plots/             losses.png, balancer_weights.png, lr.png (val_ap.png) after each epoch
  metrics.json       the final AP, AP50, AP75, APs, APm, APl (0-1), per_class and train_seconds
  model/             model.safetensors and config.json of the trained (EMA) model

A killed run continues exactly where its last checkpoint left it with --resume. Under
`torchrun --nproc_per_node=N -m lossreg train ...` it trains with DistributedDataParallel
(nccl on GPUs, gloo on CPUs); train.batch_size is the batch over all N processes."""

_TRAIN_EPILOG = """examples:
  lossreg train quickstart --output runs/quick
  lossreg train quickstart --set train.epochs=12 --set model.balancer=alwa1 --device cuda
  lossreg train quickstart --output runs/quick --resume
  torchrun --nproc_per_node=2 -m lossreg train quickstart --output runs/ddp
"""


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import distributed
    from .engine.trainer import Trainer

    recipe = load_recipe(args.recipe, overrides=args.set or ())
    output, resume = args.output, args.resume
    if resume is True and output is None:
        raise CliError("--resume without a PATH continues the run in --output DIR; give one of them")
    if isinstance(resume, str) and output is None:
        from .engine.runs import run_folder_of

        found = run_folder_of(resume)
        output = str(found) if found is not None else None
        if output is None:
            raise CliError(f"cannot tell the run folder of {resume!r}; give --output DIR")
    try:
        trainer = Trainer(recipe, output_dir=output, resume=resume, device=args.device, progress=args.progress)
        metrics = trainer.train()
    except FloatingPointError as exc:
        raise CliError(f"training diverged: {exc}") from None
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        where = output or "the run folder"
        print(f"lossreg train: interrupted; continue with --resume (and --output {where})", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup_distributed()
    if metrics is not None:
        shown = " ".join(f"{k}={metrics[k]:.4f}" for k in ("AP", "AP50", "AP75") if metrics.get(k) is not None)
        print(f"{trainer.run_dir / 'metrics.json'}: {shown or 'no validation split'} "
              f"({metrics['train_seconds']:.0f} s of training)")
    return 0


def _stamp() -> str:
    import datetime

    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _load_for_eval(spec: str, weights: str | None, overrides: Sequence[str]) -> Any:
    """The model ``lossreg eval``/``predict`` runs: ``load_model(spec)``, or with ``--weights``
    the detector of the recipe ``spec`` (a run folder means its recipe.yaml) with those weights."""
    from pathlib import Path

    from .engine.runs import find_weights, load_model, load_recipe_weights
    from .hub import HubError

    if not spec.startswith(("hf-hub:", "local-dir:")) and not Path(spec).expanduser().exists() and (
        spec.startswith(("/", ".", "~")) or "/" in spec or "\\" in spec
    ):  # a path (not a model name), and nothing there
        hub = spec.count("/") == 1 and not spec.startswith(("/", ".", "~"))
        raise CliError(f"{spec}: no such run or model folder"
                       + (f" (a model on the Hugging Face Hub is hf-hub:{spec})" if hub else ""))
    try:
        if weights is None:
            model = load_model(spec)
            if overrides and getattr(model, "recipe", None) is not None:
                model.recipe = load_recipe(model.recipe, overrides=overrides, validate=False)
            return model
        from .data import read_dataset

        source = Path(spec) / "recipe.yaml" if Path(spec).is_dir() else spec
        recipe = load_recipe(source, overrides=overrides)
        path = find_weights(weights)
        class_names = read_dataset(recipe.data.train).class_names
        model = load_recipe_weights(recipe, path, num_classes=recipe.model.num_classes or len(class_names),
                                    label_names=list(class_names))
        model.weights_path = path
        # a checkpoint holds the live weights; with train.ema the run's model/ holds their average
        setattr(model, "weights_are_raw", bool(recipe.train.ema) and path.name != "model.safetensors")  # noqa: B010
        setattr(model, "weights_ema", bool(recipe.train.ema) and path.name == "model.safetensors")  # noqa: B010
        return model
    except (HubError, FileNotFoundError) as exc:
        message = str(exc)
        if weights is None and "bare model name" in message:
            try:
                find_recipe(spec)
                message += f"; {spec!r} is a recipe: evaluate weights trained from it with --weights PATH"
            except RecipeError:
                pass
        raise CliError(message) from None


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data import DetectionDataset, build_transforms
    from .engine.eval_folder import evaluate_to_folder, match_labels, model_image_size, open_eval_data
    from .engine.evaluate import METRIC_KEYS
    from .engine.runs import is_run_folder
    from .engine.trainer import resolve_device

    model = _load_for_eval(args.model, args.weights, args.set or ())
    recipe = getattr(model, "recipe", None)
    try:
        found = open_eval_data(args.data, ann_file=args.ann, images=args.images, split=args.split, recipe=recipe,
                               class_names=getattr(model, "label_names", None))
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    label_map = match_labels(getattr(model, "label_names", None), model.num_classes, found.data.class_names)
    image_size = args.image_size or model_image_size(model)
    if image_size is None:
        raise CliError("the model does not say which image size it was trained at; give --image-size N")
    if args.output:
        out = Path(args.output)
    elif is_run_folder(args.model):  # with --weights, a checkpoint's own folder: eval-val-epoch_0003
        tag = f"-{model.weights_path.stem}" if args.weights else ""
        out = Path(args.model) / f"eval-{found.name}{tag}"
    else:
        out = Path(f"eval-{_stamp()}")
    ev = getattr(recipe, "eval", None)
    device = resolve_device(args.device)
    logging.getLogger("lossreg.eval").info(
        "evaluating %s on %d images of %s at image size %s (%s)", args.model, len(found.data), found.name, image_size, device
    )
    dataset = DetectionDataset(found.data, build_transforms((), image_size, train=False))
    try:
        metrics = evaluate_to_folder(
            model.to(device),
            dataset,
            out,
            batch_size=args.batch_size or (ev.batch_size if ev is not None else 8),
            device=device,
            ann_file=found.ann_file,
            label_map=label_map,
            max_dets=ev.max_dets if ev is not None else 100,
            score_thr=args.score_thr,
            progress=sys.stderr.isatty(),
            amp=args.amp,
            extra={"model": str(args.model), "data": found.name, "amp": args.amp,
                   "image_size": image_size if isinstance(image_size, int) else list(image_size),
                   **({"weights": str(model.weights_path), "weights_ema": model.weights_ema} if args.weights else {})},
        )
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    if getattr(model, "weights_are_raw", False):
        print(f"note: {model.weights_path} holds the raw trained weights; this recipe trains with train.ema, and its "
              "run's model/ holds their exponential moving average (what `lossreg eval RUN` evaluates)")
    print(f"{found.name}: {metrics['num_images']} images, {metrics['num_detections']} detections")
    for key in METRIC_KEYS:
        print(f"  {key:<6} {_fmt(metrics[key])}")
    width = max((len(n) for n in metrics["per_class"]), default=0)
    print("  per class AP:")
    for name, value in metrics["per_class"].items():
        print(f"    {name:<{width}}  {_fmt(value)}")
    print(f"score-IoU consistency of {metrics['score_iou_pairs']} detections with score >= {args.score_thr:g}: "
          f"Pearson r = {_fmt(metrics['score_iou_correlation'])}, Spearman rho = {_fmt(metrics['score_iou_spearman'])}")
    print(f"wrote {out}/: metrics.json, detections.json, pr_curve.png, score_iou.png")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .engine.eval_folder import model_image_size
    from .engine.predict import expand_images, write_predictions
    from .engine.trainer import resolve_device
    from .engine.video import is_video

    # video files (named, or matched by a pattern) are read frame by frame; the rest are images
    named_videos = [item for item in args.images if is_video(item) and Path(item).expanduser().is_file()]
    try:
        found = expand_images([item for item in args.images if item not in named_videos])
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    videos = [Path(v).expanduser() for v in named_videos] + [p for p in found if is_video(p)]
    paths = [p for p in found if not is_video(p)]
    model = _load_for_eval(args.model, None, ())
    image_size = args.image_size or model_image_size(model)
    if image_size is None:
        raise CliError("the model does not say which image size it was trained at; give --image-size N")
    device = resolve_device(args.device)
    try:
        records = write_predictions(model.to(device), paths, args.out, image_size, score_thr=args.score_thr,
                                    device=device, batch_size=args.batch_size, progress=sys.stderr.isatty(),
                                    videos=videos, max_frames=args.max_frames, amp=args.amp)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    images = [r for r in records if r.get("type") != "video"]
    clips = [r for r in records if r.get("type") == "video"]
    total = sum(len(r["detections"]) for r in images) + sum(r["num_detections"] for r in clips)
    parts = [f"{len(images)} images"] if images or not clips else []
    parts += [f"{len(clips)} video{'s' if len(clips) != 1 else ''} ({sum(r['frames'] for r in clips)} frames)"] if clips else []
    wrote = ["one .jpg and .json per image"] if images else []
    wrote += [f"{r['output']} and {r['frames_dir']}*.json" for r in clips]
    print(f"{', '.join(parts)}, {total} detections with score >= {args.score_thr:g}; "
          f"wrote {args.out}/predictions.json, {', '.join(wrote)}")
    return 0


_EVAL_DESCRIPTION = """Evaluate a trained detector with pycocotools and write what it found.

MODEL_OR_RUN is a run folder of `lossreg train`, a saved model folder (config.json +
model.safetensors, or local-dir:PATH), hf-hub:owner/repo[@rev] or a pretrained name.tag.
The data is --data (a COCO JSON file or a Pascal VOC folder), else the model's recipe's
data.val split. The model's classes are matched to the dataset's by name (a model without
class names needs as many classes as the dataset).

The output folder (--output, default <run>/eval-<dataset> for a run folder, with
--weights <run>/eval-<dataset>-<weights file stem>, else eval-<time>) receives:
  metrics.json     AP, AP50, AP75, APs, APm, APl (0-1, null where COCO leaves them
                   undefined), per_class, score_iou_correlation (Pearson r),
                   score_iou_spearman, score_iou_pairs, num_images, num_detections
  detections.json  the detections in COCO results format, on the original images
  pr_curve.png     precision-recall at IoU 0.5 and 0.75, per class and all classes
                   (COCOeval's precision array)
  score_iou.png    each detection's score against its IoU with the best ground truth
                   of its class (HCRAL figure 3a): do scores agree with localisation?

The old form RECIPE --weights PATH still works: the recipe's detector (a run folder
means its recipe.yaml) with the weights of PATH (a run folder, a checkpoint or a
.safetensors file). A checkpoint holds the raw trained weights: with train.ema (the quick
start) the run's model/, which `lossreg eval RUN` evaluates, holds their moving average,
and the output says which was evaluated (metrics.json: "weights", "weights_ema")."""

_EVAL_EPILOG = """examples:
  lossreg eval runs/quick                                 the run's val split -> runs/quick/eval-val/
  lossreg eval runs/quick --data data/val/annotations.json --images data/val/images
  lossreg eval runs/quick --data VOCdevkit/VOC2007 --split test --image-size 512
  lossreg eval hf-hub:owner/repo --data instances_val2017.json --output eval-coco
  lossreg eval runs/quick --weights runs/quick/checkpoints/epoch_0003
  lossreg eval quickstart --weights runs/quick            a recipe with trained weights
"""

_PREDICT_DESCRIPTION = """Run a trained detector on image files, folders (their .jpg/.jpeg/.png files, e.g. a
video's frames), glob patterns or video files (.mp4, .avi, .mov, .mkv, .webm, .m4v read with
OpenCV; animated .gif with PIL). MODEL is a run folder, a saved model folder,
local-dir:PATH, hf-hub:owner/repo or a pretrained name.tag. Images and frames are resized as
in evaluation (the recipe's data.image_size, or --image-size) and the boxes mapped back to
the original pixels.

DIR receives:
  predictions.json  per image: file, width, height, output (its drawn image) and
                    detections, best first: box [x1, y1, x2, y2] px, score, label, label_name;
                    per video: file, type "video", fps, frames, num_detections, output, frames_dir
  <stem>.jpg        the image with each box and 'label_name score' drawn
  <stem>.json       the image's record (one JSON per image: per frame for a folder of frames)
  <stem>.mp4        a video with the boxes drawn (same size and frame rate; .gif for a GIF)
  <stem>/NNNNNN.json  one JSON per video frame: file, frame, time (s), width, height, detections"""

_PREDICT_EPILOG = """examples:
  lossreg predict runs/quick photos/ --out preds
  lossreg predict runs/quick 'shots/*.png' one.jpg --out preds --score-thr 0.5
  lossreg predict hf-hub:owner/repo street.jpg --out preds --image-size 640 --device cuda
  lossreg predict runs/quick clip.mp4 --out preds --max-frames 300    clip.mp4 annotated + clip/*.json
  lossreg predict runs/quick frames/ --out preds                      annotated frames + a JSON each
"""

_PUSH_DESCRIPTION = """Publish a trained model to the Hugging Face Hub in one commit (create_repo(exist_ok=True) +
upload_folder): model.safetensors, config.json, recipe.yaml and the model card README.md, with the
card's usage snippets pointing at hf-hub:REPO_ID. RUN_DIR is a run folder of `lossreg train`
(its model/) or a folder written by lossreg.save_pretrained. The folder is checked first: its
config must load and its weights must match the recorded sha256.

The token comes from --token, HF_TOKEN or `hf auth login`; HF_ENDPOINT or --endpoint selects
another Hub server."""

_PUSH_EPILOG = """examples:
  lossreg push runs/quick me/atss-shapes
  lossreg push runs/bccd me/atss-bccd --private --revision v1 --message "8 epochs at 256 px"
  create_model("hf-hub:me/atss-shapes")              loading it back, in Python
"""


def cmd_push(args: argparse.Namespace) -> int:
    from .engine.runs import model_folder
    from .hub import push_folder

    info = push_folder(
        model_folder(args.folder), args.repo_id, token=args.token, private=args.private, revision=args.revision,
        commit_message=args.message, endpoint=args.endpoint,
    )
    print(f"published {args.folder} -> {info.commit_url}")
    print(f'load it with lossreg.create_model("hf-hub:{args.repo_id}{"@" + args.revision if args.revision else ""}")')
    return 0


_ABLATE_DESCRIPTION = """Train every variant of a recipe over several seeds and tabulate them as the papers do.

Each --swap KEY=V1,V2,... lists values of one recipe field, read as YAML like --set values
(a value may be a mapping: commas inside {...}, [...] or quotes do not split; repeating a
KEY adds values). The variants are every combination (the grid) or, with --one-at-a-time,
the recipe as it is ("baseline") plus each single swapped value. Every variant's recipe is
validated before anything trains. Each variant runs once per seed (train.seed).

The output folder (--output, default runs/ablate-<recipe>) receives:
  ablation_plan.json         the variants, seeds, baseline and each variant's recipe
  <variant>/seed<N>/         a run folder of `lossreg train` per variant and seed, e.g.
                             cls_loss=qfl__reg_loss=giou/seed0, with eval-<split>/ from
                             `lossreg eval` of its final model (score-IoU pairs included)
  ablation.md                the table: AP, AP50, AP75, APs, APm, APl in %, mean ± std over
                             seeds, delta AP to the baseline, score-IoU Pearson r, time per run
  ablation.json              every number behind the table, per run and per variant
  ablation_ap.png            AP per variant with error bars, the baseline highlighted
  score_iou_grid.png         the score-IoU plot of every variant side by side (first seed)

The baseline is the variant equal to the recipe's own setting, else the first variant
(ablation.md says which). Running the same command again skips finished runs and resumes
half-finished ones from their last checkpoint; --summary-only rebuilds the summary.
--jobs N trains N runs at once as subprocesses (the CPU threads split between them, one GPU
each when there are several; logs in <run>/ablate.log). Under `torchrun --nproc_per_node=N
-m lossreg ablate ...` every run trains on all N processes with DDP, one run after the other."""

_ABLATE_EPILOG = """examples:
  lossreg ablate quickstart --swap model.cls_loss=focal,qfl,vfl,hcra_c --swap model.reg_loss=giou,hcra_r --seeds 3
  lossreg ablate quickstart --swap model.cls_loss=focal,qfl --swap model.assigner=atss,eatss --one-at-a-time
  lossreg ablate quickstart --swap 'model.cls_loss=focal,{name: hcra_c, rci_mode: paper}' --jobs 2
  lossreg ablate quickstart --swap model.balancer=static,alwa1,alwa2 --set train.epochs=12 --dry-run
  lossreg ablate quickstart --one-at-a-time --swap model.cls_loss=hcra_c --swap model.assigner=eatss \
      --swap 'model.cls_loss+model.assigner=[hcra_c, eatss]'   # each alone and both together
  lossreg ablate quickstart --swap model.cls_loss=focal,qfl --output runs/abl --summary-only
  torchrun --nproc_per_node=2 -m lossreg ablate quickstart --swap model.cls_loss=focal,qfl --seeds 2
"""


def cmd_ablate(args: argparse.Namespace) -> int:
    from .engine import ablate, distributed
    from .engine.ablate.archive import sync_archive

    if args.seeds is not None and args.seed_list is not None:
        raise CliError("give --seeds N or --seed-list S1,S2,..., not both")
    seeds = ablate.parse_seed_list(args.seed_list) if args.seed_list is not None else args.seeds
    plan = ablate.plan_ablation(args.recipe, args.swap or [], one_at_a_time=args.one_at_a_time, seeds=seeds,
                                sets=args.set or (), output_dir=args.output)
    if args.dry_run:
        print(ablate.describe_plan(plan, ablate.statuses(plan)))
        return 0
    if args.summary_only:
        if args.results:
            sync_archive(plan, args.results, "restore")
        ablate.statuses(plan)  # refuses run folders of another recipe
        ablate.write_plan(plan)
        summary = ablate.summarize(plan.output_dir)
    else:
        def say(line: str) -> None:
            print(f"lossreg ablate: {line}", file=sys.stderr, flush=True)

        try:
            summary = ablate.run_ablation(plan, jobs=args.jobs, device=args.device, progress=args.progress, say=say,
                                          results=args.results)
        except KeyboardInterrupt:
            print("lossreg ablate: interrupted; run the same command again to continue", file=sys.stderr)
            return 130
        finally:
            distributed.cleanup_distributed()
        if summary is None:  # ranks > 0 under torchrun
            return 0
    print(summary["table"])
    print(f"wrote {plan.output_dir}/: ablation.md, ablation.json, ablation_ap.png, score_iou_grid.png")
    failed = summary.get("failed") or []
    if failed:
        print(f"lossreg ablate: {len(failed)} of {len(plan.runs)} runs failed ({', '.join(failed)}); see their "
              "ablate.log; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


_EXPORT_DESCRIPTION = """Export a trained detector as a static graph for deployment: ONNX (onnxruntime, TensorRT,
...) or a torch.export ExportedProgram (.pt2). MODEL is a run folder, a saved model folder,
local-dir:PATH, hf-hub:owner/repo or a pretrained name.tag.

The graph takes a fixed batch `images` (float32 [B, 3, H, W], RGB in 0-1; normalised inside)
and returns, NMS included, fixed-shape padded outputs in the input image's pixels:
  boxes [B, K, 4] (x1, y1, x2, y2), scores [B, K], labels [B, K] (0..C-1, -1 in empty slots)
  and num_detections [B], with K the model's max_dets. The ONNX file's metadata holds the
  class names, the input size and the post-processing settings. ONNX needs the export
  extra: pip install "lossreg[export]"."""

_EXPORT_EPILOG = """examples:
  lossreg export runs/quick --output quick.onnx                     the recipe's image size, batch 1
  lossreg export runs/quick --image-size 480 640 --batch 8 --output quick_b8.onnx
  lossreg export hf-hub:owner/repo --format exported-program --output model.pt2
"""


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model, resolve_image_size

    model = _load_for_eval(args.model, None, ())
    size = resolve_image_size(model, args.image_size)
    path = export_model(model, args.output, format=args.format, image_size=size, batch_size=args.batch)
    print(f"wrote {path} ({args.format}): images [{args.batch}, 3, {size[0]}, {size[1]}] -> boxes, scores, labels, "
          f"num_detections (K = {getattr(getattr(model, 'roi_head', None) or model.head, 'max_dets', '?')})")
    return 0


def _add_export_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained detector to ONNX or a torch.export ExportedProgram (NMS included)",
        description=_EXPORT_DESCRIPTION,
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL",
                   help="run folder, saved model folder, local-dir:PATH, hf-hub:owner/repo or name.tag")
    p.add_argument("--format", choices=("onnx", "exported-program"), default="onnx", help="what to write [onnx]")
    p.add_argument("--image-size", type=int, nargs="+", metavar=("H", "W"),
                   help="input size H W (one value: square) [the recipe's data.image_size]")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="images per call, fixed in the graph [1]")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="the file to write (.onnx, .pt2)")
    p.set_defaults(func=cmd_export)


_CONVERT_EPILOG = """examples:
  lossreg convert retinanet_resnet50_fpn.tv_coco --output converted/retinanet_tv   a published tag
  lossreg convert FCOS_ResNet50_FPN_Weights.COCO_V1 --output converted/fcos_tv     torchvision's weights name
  lossreg convert my_tv_retinanet.pth --arch retinanet_resnet50_fpn --output converted/mine
  lossreg convert atss_r50_fpn_1x_coco_20200209-985f7bd0.pth --from mmdet --arch atss_r50_fpn_1x_coco \\
      --license apache-2.0 --coco-ap 39.4 --output converted/atss
"""


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    folder = convert(args.source, args.output, library=args.library, arch=args.arch, classes=args.classes,
                     license=args.license, coco_ap=args.coco_ap)
    print(f"wrote {folder}: model.safetensors, config.json, README.md (source, license, AP); "
          f"load it with lossreg.create_model('local-dir:{folder}')")
    return 0


_CONVERT_DESCRIPTION = """Convert another library's detector into a lossreg save_pretrained folder (model.safetensors,
config.json, a card stating the source, its license and its published COCO AP).

SOURCE is a converted pretrained tag (`lossreg list pretrained`, e.g. retinanet_resnet50_fpn.tv_coco:
its original file is downloaded once into $LOSSREG_HOME/downloads and hash-checked), the name of
torchvision's published weights (RetinaNet_ResNet50_FPN_Weights.COCO_V1), or a checkpoint file: a
torchvision state dict (--from torchvision, the default) or an mmdetection checkpoint (--from mmdet
--arch NAME). The converted detector makes the source's detections (see lossreg.convert)."""


def _add_convert_parser(sub: Any) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a torchvision or mmdetection COCO detector into a lossreg model folder",
        description=_CONVERT_DESCRIPTION,
        epilog=_CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="a converted pretrained tag, torchvision's weights name or a checkpoint file")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="the save_pretrained folder to write (new or empty)")
    p.add_argument("--from", dest="library", choices=("torchvision", "mmdet"), help="the file's library [torchvision]")
    p.add_argument("--arch", help="the source architecture (torchvision builder or mmdetection config name)")
    p.add_argument("--classes", choices=("auto", "coco80", "all"), default="auto",
                   help="torchvision: the 80 COCO classes, or every output slot [auto: coco80 for 91 slots]")
    p.add_argument("--license", help="the weights' license, for the card (a file's; a tag states its own)")
    p.add_argument("--coco-ap", type=float, metavar="AP", help="the source's published COCO box AP in %%, for the card")
    p.set_defaults(func=cmd_convert)


_EPILOG = """examples:
  lossreg list                      every kind with its names
  lossreg list loss '*iou*' --describe
  lossreg info loss hcra_c          parameters, paper and documentation
  lossreg check atss_r50_hcral_eatss --set model.cls_loss=focal --set train.epochs=24
  lossreg train quickstart --output runs/quick       train, evaluate, write metrics.json
  lossreg eval runs/quick                            COCO metrics, PR curves, score-IoU plot
  lossreg predict runs/quick photos/ --out preds     detections drawn on images
  lossreg push runs/quick me/atss-shapes             publish to the Hugging Face Hub
  lossreg export runs/quick --output quick.onnx      ONNX with NMS, fixed-shape outputs
  lossreg ablate quickstart --swap model.cls_loss=focal,qfl --seeds 3   a table of variants x seeds
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossreg",
        description="Swap detection losses, assigners and loss balancers by name, assemble detectors from "
        "YAML recipes, and share them on the Hugging Face Hub.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lossreg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    kinds = ", ".join(KINDS + _EXTRA_KINDS)

    p = sub.add_parser(
        "list",
        help="list registered components, models, pretrained weights or recipes",
        description=f"List names of one kind ({kinds}), optionally filtered by a shell-style wildcard. "
        "Without a kind, print every kind with its names.",
    )
    p.add_argument("kind", nargs="?", help=f"one of: {kinds}")
    p.add_argument("pattern", nargs="?", help="fnmatch wildcard, e.g. '*iou*' (quote it in the shell)")
    p.add_argument("-d", "--describe", action="store_true", help="add each entry's one-line description")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "info",
        help="show a component's parameters, task, paper and documentation, or a recipe",
        description="Describe one component (its constructor parameters with defaults, its task, the paper it "
        "comes from and its documentation) or print a recipe file.",
    )
    p.add_argument("kind", help=f"one of: {', '.join(KINDS)}, recipe")
    p.add_argument("name", help="the component or recipe name")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "check",
        help="validate a recipe (with overrides) and print it fully resolved",
        description="Load a recipe by name or path, apply --set overrides, validate every field and component, "
        "and print the resolved recipe as YAML. Errors name the YAML path of the bad field.",
    )
    p.add_argument("recipe", help="recipe name (see `lossreg list recipe`) or path to a .yaml file")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. model.cls_loss.gamma=1.5 (repeatable)"
    )
    p.add_argument("--schema-only", action="store_true", help="check types only, not that the components exist")
    p.add_argument("--no-data", action="store_true",
                   help="do not check that the data paths exist on this machine (a recipe for another machine)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "train",
        help="train a recipe's detector: checkpoints, metrics, plots and a final COCO evaluation",
        description=_TRAIN_DESCRIPTION,
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe name (see `lossreg list recipe`) or path to a .yaml file")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a recipe field, e.g. train.epochs=24 (repeatable)"
    )
    p.add_argument("--output", "-o", metavar="DIR", help="the run folder [runs/<recipe>-<time>]")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="PATH",
        help="continue a run: without PATH from --output's last checkpoint; PATH is a run folder or a "
        "checkpoint (runs/x/checkpoints/last or one of its files), whose run folder is used unless --output is given",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (overrides train.device)")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show tqdm progress bars [when stderr is a terminal]",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="COCO metrics, precision-recall curves and the score-IoU plot of a trained model",
        description=_EVAL_DESCRIPTION,
        epilog=_EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL_OR_RUN",
                   help="run folder, saved model folder, local-dir:PATH, hf-hub:owner/repo or name.tag "
                   "(with --weights: a recipe name, .yaml file or run folder)")
    p.add_argument("--data", metavar="PATH",
                   help="a COCO JSON file, a VOC folder (Annotations/, JPEGImages/, ImageSets/Main/), or with "
                   "--ann the COCO images folder [the recipe's data.val]")
    p.add_argument("--ann", metavar="FILE", help="COCO JSON annotations (images in --data or --images)")
    p.add_argument("--images", metavar="DIR",
                   help="COCO images folder [the JSON's folder, or images/ next to it]")
    p.add_argument("--split", help="VOC split in ImageSets/Main [val, else test, else every XML]")
    p.add_argument("--output", "-o", metavar="DIR", help="output folder [<run>/eval-<dataset>, else eval-<time>]")
    p.add_argument("--image-size", type=int, metavar="N", help="input size (longer side) [the recipe's data.image_size]")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per batch [the recipe's eval.batch_size, else 8]")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto [auto]")
    p.add_argument("--score-thr", type=float, default=0.05, metavar="T",
                   help="detections in the score-IoU plot and correlation score at least T [0.05]")
    p.add_argument("--weights", "-w", metavar="PATH",
                   help="evaluate these weights (run folder, checkpoint or .safetensors) with the detector of the "
                   "recipe MODEL_OR_RUN; a checkpoint's are the raw weights, not the EMA average model/ holds "
                   "with train.ema")
    p.add_argument("--amp", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                   help="autocast of the forward: bf16 is ~1.7x faster on a CPU with native bf16 (AVX512-BF16/AMX) "
                   "with scores that differ in the 3rd digit; auto as train.amp [fp32]")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of the model's recipe, e.g. data.val.split=test (repeatable)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "predict",
        help="detect objects in image files: predictions.json and the images with boxes drawn",
        description=_PREDICT_DESCRIPTION,
        epilog=_PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL",
                   help="run folder, saved model folder, local-dir:PATH, hf-hub:owner/repo or name.tag")
    p.add_argument("images", nargs="+", metavar="IMAGES",
                   help="image files, folders of images or frames, glob patterns (quoted) or video files")
    p.add_argument("--out", "--output", "-o", dest="out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--score-thr", type=float, default=0.3, metavar="T", help="keep detections scoring at least T [0.3]")
    p.add_argument("--image-size", type=int, metavar="N", help="input size (longer side) [the recipe's data.image_size]")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per batch [4]")
    p.add_argument("--max-frames", type=int, metavar="N", help="read at most N frames of each video [all]")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto [auto]")
    p.add_argument("--amp", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                   help="autocast of the forward: bf16 is ~1.7x faster on a CPU with native bf16 (AVX512-BF16/AMX) "
                   "with scores that differ in the 3rd digit; auto as train.amp [fp32]")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "push",
        help="publish a trained model (run folder or saved model) to the Hugging Face Hub",
        description=_PUSH_DESCRIPTION,
        epilog=_PUSH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", metavar="RUN_DIR", help="a run folder (its model/) or a saved model folder")
    p.add_argument("repo_id", metavar="REPO_ID", help="owner/name of the Hub repository (created if missing)")
    p.add_argument("--token", help="Hub token [HF_TOKEN or the `hf auth login` token]")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created if missing) [main]")
    p.add_argument("--message", "-m", default="Upload lossreg model", help="commit message")
    p.add_argument("--endpoint", metavar="URL", help="Hub server [HF_ENDPOINT or https://huggingface.co]")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "ablate",
        help="train every combination of swapped recipe settings over several seeds and tabulate them",
        description=_ABLATE_DESCRIPTION,
        epilog=_ABLATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe name (see `lossreg list recipe`) or path to a .yaml file")
    p.add_argument("--swap", action="append", metavar="KEY=V1,V2,...",
                   help="a recipe field and the values to try, e.g. model.cls_loss=focal,qfl (repeatable); "
                        "KEY1+KEY2=[v1, v2],... sets several fields together")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="the recipe as it is plus one variant per swapped value, instead of every combination")
    p.add_argument("--seeds", type=int, metavar="N", help="train each variant with seeds 0 .. N-1 [the recipe's seed]")
    p.add_argument("--seed-list", metavar="S1,S2,...", help="train each variant with these seeds, e.g. 0,1,2")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="runs trained at once, as subprocesses with the CPU threads split between them [1]")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field of every variant, e.g. train.epochs=12 (repeatable)")
    p.add_argument("--output", "-o", metavar="DIR", help="the ablation folder [runs/ablate-<recipe>]")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (overrides train.device)")
    p.add_argument("--results", metavar="DIR",
                   help="keep every finished run's small result files (recipe, metrics, evaluation, score-IoU "
                        "pairs; no checkpoints) in DIR, e.g. docs/results/<name>, and restore runs from there "
                        "first, so a new machine with the same DIR trains only what is missing")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing: rebuild ablation.md/json/png from the run folders there are")
    p.add_argument("--dry-run", action="store_true",
                   help="print the variants and runs (with their state: new, resume, evaluate, done) and exit")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=False,
        help="show tqdm progress bars of the runs trained in this process [off]",
    )
    p.set_defaults(func=cmd_ablate)
    _add_export_parser(sub)
    _add_convert_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    previous = warnings.showwarning
    if not args.debug:
        warnings.showwarning = _one_line_warning(args.command)
    try:
        return _run(args)
    finally:
        warnings.showwarning = previous


def _run(args: argparse.Namespace) -> int:
    """``args.func(args)``, every error as one line ``lossreg <command>: error: ...`` unless ``--debug``."""
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `lossreg list | head`
        return 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"lossreg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line without --debug, whatever went wrong
        if args.debug:
            raise
        known = isinstance(exc, _known_errors())
        text = _one_line(exc)
        if not known:  # not a user error lossreg anticipated: say what it was and how to see more
            text = f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
        print(f"lossreg {args.command}: error: {text}", file=sys.stderr)
        return 2 if known else 1


def _known_errors() -> tuple[type[BaseException], ...]:
    """The error types whose message is written for the user: printed as they are, exit status 2."""
    from ._limits import InputLimitError
    from .detectors.backbone import OfflineWeightsError
    from .engine.checkpoint import CheckpointError
    from .engine.runs import RunFolderLocked

    return (CliError, RecipeError, UnknownComponentError, HubError, TypeError, ValueError, InputLimitError,
            OfflineWeightsError, CheckpointError, RunFolderLocked, OSError, FloatingPointError)


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a multi-line message's lines joined with ' | ', at most 400 characters)."""
    text = exc.message if isinstance(exc, UnknownComponentError) else str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None and not text.startswith(str(exc.filename)):
        text = f"{exc.filename}: {exc.strerror}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = " | ".join(lines) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def _one_line_warning(command: str) -> Any:
    """``warnings.showwarning`` printing ``lossreg <command>: warning: <message>`` (no source line)."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        text = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
        print(f"lossreg {command}: warning: {text} ({category.__name__})", file=file or sys.stderr)

    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
