"""The recipe schema: typed, frozen dataclasses for the model, data, training and evaluation sections, and their checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .._registry import BadParameterError, UnknownComponentError, close_matches, component_slots, get_registry
from .convert import ComponentSpec, RecipeError, build, join, to_plain, to_yaml
from .overrides import apply_overrides

__all__ = [
    "DataCfg",
    "DatasetCfg",
    "EvalCfg",
    "ModelCfg",
    "OptimizerCfg",
    "Recipe",
    "TrainCfg",
    "validate",
]

_TASK_WORDS = {"cls": "classification", "reg": "regression"}


@dataclass(frozen=True)
class ModelCfg:
    """The detector: architecture, backbone and every swappable component.

    Components (the slots of :func:`lossreg.component_slots`: ``neck``, ``head``,
    ``cls_loss``, ``reg_loss``, ``quality_loss``, ``assigner``, ``balancer``, ...)
    left unset use the architecture's defaults. ``weights`` starts
    from published weights (a pretrained tag ``model.tag``, ``hf-hub:owner/repo``
    or ``local-dir:PATH``). ``args`` holds further detector keyword arguments.
    """

    arch: str
    backbone: str = "resnet50"
    pretrained_backbone: bool = False
    num_classes: int | None = None
    #: the set component slots, ``{"cls_loss": ComponentSpec, ...}``; in YAML each slot is a key of
    #: ``model`` itself (``model.cls_loss: focal``) and reads as an attribute (``cfg.cls_loss``)
    components: Mapping[str, ComponentSpec] = field(default_factory=dict)
    weights: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)

    extra_into: ClassVar[str] = "components"

    @staticmethod
    def extra_fields() -> dict[str, Any]:
        """The slot keys of ``model``: every slot a registered detector or head declares."""
        return {key: ComponentSpec for key in component_slots()}

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: a slot that is not set reads as None
        if not name.startswith("_") and name in component_slots():
            return self.components.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def component_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``create_model`` (unset components omitted)."""
        out: dict[str, Any] = {"backbone": self.backbone, "pretrained_backbone": self.pretrained_backbone}
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        for key, spec in self.components.items():
            out[key] = spec.to_config()
        out.update(self.args)
        return out


@dataclass(frozen=True)
class DatasetCfg:
    """One split of a dataset.

    ``format``: ``coco`` (``ann_file`` JSON + ``root`` image folder), ``voc``
    (``root`` with Annotations/JPEGImages/ImageSets, ``split`` file stem) or
    ``synthetic`` (the generated quick-start set; ``params`` go to the generator).
    ``max_images`` keeps the split's first N images (smoke runs, tests).
    """

    format: Literal["coco", "voc", "synthetic"] = "synthetic"
    root: str | None = None
    ann_file: str | None = None
    split: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    max_images: int | None = None


@dataclass(frozen=True)
class DataCfg:
    """Datasets, input size and albumentations augmentations (by class name and params)."""

    train: DatasetCfg = field(default_factory=DatasetCfg)
    val: DatasetCfg | None = None
    image_size: int | tuple[int, int] = 512
    augment: tuple[ComponentSpec, ...] = ()
    num_workers: int = 0


@dataclass(frozen=True)
class OptimizerCfg:
    """Optimizer by name with its learning rate and regularisation.

    ``name``: ``sgd`` (torch's SGD with ``momentum``, no Nesterov) or ``adamw`` (torch's
    AdamW, fused where the parameters allow), or any optimizer timm has
    (``timm.optim.list_optimizers()``: ``lamb``, ``lion``, ``adan``, ``nesterov``, ``sgdp``,
    ..., and ``lookahead_<name>``), built by ``timm.optim.create_optimizer_v2``.
    ``momentum`` goes to optimizers that have one and ``betas`` to those with two;
    ``args`` are further keyword arguments of the optimizer (``eps``, ``nesterov``, ...).
    Weight decay skips norm layers, biases, the heads' per-level scales and the
    balancers' parameters unless ``decay_norm_and_bias`` (every parameter decayed, as
    mmdetection's plain SGD configs do).
    """

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0001
    betas: tuple[float, float] = (0.9, 0.999)
    args: Mapping[str, Any] = field(default_factory=dict)
    decay_norm_and_bias: bool = False


@dataclass(frozen=True)
class TrainCfg:
    """Schedule and training-loop settings (``steps`` are epochs at which the lr drops by ``gamma``).

    ``batch_size`` is the batch of one optimizer step over every process;
    ``accumulate: N`` runs it as N micro-batches per process whose losses are normalised
    as one batch (gradient accumulation, :mod:`lossreg.engine.accumulate`).
    """

    epochs: int = 12
    batch_size: int = 8
    accumulate: int = 1
    optimizer: OptimizerCfg = field(default_factory=OptimizerCfg)
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    schedule: Literal["step", "cosine", "constant"] = "step"
    steps: tuple[int, ...] = (8, 11)
    gamma: float = 0.1
    grad_clip: float | None = None
    #: mixed precision (engine/precision.py): auto (bf16 where native, fp16 + GradScaler on older
    #: CUDA, fp32 otherwise), bf16, fp16, fp32; true/false as before (on: bf16 CPU, fp16 CUDA)
    amp: bool | Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    log_interval: int = 20
    checkpoint_interval: int = 1
    #: keep only the newest N ``epoch_NNNN`` checkpoints (None: all); ``last`` is always kept
    keep_last: int | None = None
    #: keep ``checkpoints/best.*``: the checkpoint of the evaluation with the highest value of this metric
    best_metric: Literal["AP", "AP50", "AP75", "APs", "APm", "APl", "voc07_mAP", "voc12_mAP"] | None = None
    #: also log losses, balancer weights, lr and validation metrics to <run>/tensorboard/ (the tensorboard extra)
    tensorboard: bool = False
    #: under torchrun: batch-norm statistics over every process (torch.nn.SyncBatchNorm; engine/sync_bn.py)
    sync_bn: bool = False


@dataclass(frozen=True)
class EvalCfg:
    """Post-processing and evaluation settings."""

    score_thr: float = 0.05
    nms_thr: float = 0.6
    pre_nms_topk: int = 1000
    max_dets: int = 100
    interval: int = 1
    batch_size: int = 8


@dataclass(frozen=True)
class Recipe:
    """A complete, validated recipe (see the module docstring)."""

    name: str
    model: ModelCfg
    description: str = ""
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML-ready); ``load_recipe(r.to_dict()) == r``."""
        return to_plain(self)

    def to_yaml(self) -> str:
        return to_yaml(self.to_dict())

    def with_overrides(self, overrides: Sequence[str]) -> Recipe:
        """A new recipe with ``a.b=value`` overrides applied and validated."""
        recipe = build(Recipe, apply_overrides(self.to_dict(), overrides), "")
        validate(recipe)
        return recipe


# --------------------------------------------------------------------------- checks


def _check_component(spec: ComponentSpec, kind: str, task: str | None, path: str) -> None:
    reg = get_registry(kind)
    if spec.name not in reg:
        exc = UnknownComponentError(kind, spec.name, reg.names(task=task) if task else reg.names())
        raise RecipeError(str(exc), join(path, "name"))
    info = reg.info(spec.name)
    if task is not None and info.task != task:
        examples = ", ".join(reg.names(task=task)[:4])
        raise RecipeError(
            f"{spec.name!r} is a {_TASK_WORDS.get(info.task or '', info.task)} loss; this field needs a "
            f"{_TASK_WORDS[task]} loss ({examples}, ...)",
            join(path, "name"),
        )
    try:
        reg.check_kwargs(spec.name, spec.params, where=f"{kind} {spec.name!r}")
    except BadParameterError as exc:
        raise RecipeError(str(exc), join(path, exc.param)) from None


def validate(recipe: Recipe) -> None:
    """Check that the named components exist and take their parameters, and the numbers are in range."""
    model = recipe.model
    try:
        get_registry("detector").info(model.arch)
    except UnknownComponentError as exc:
        raise RecipeError(str(exc), "model.arch") from None
    slots = component_slots()
    for key, spec in model.components.items():
        _check_component(spec, slots[key].kind, slots[key].task, f"model.{key}")
    if model.num_classes is not None and model.num_classes < 1:
        raise RecipeError(f"must be >= 1, got {model.num_classes}", "model.num_classes")
    if model.weights is not None:
        from .._registry import parse_model_name

        try:
            parse_model_name(model.weights)
        except ValueError as exc:
            raise RecipeError(str(exc), "model.weights") from None
    _validate_data(recipe.data)
    train = recipe.train
    for key in ("epochs", "batch_size", "accumulate", "log_interval", "checkpoint_interval"):
        if getattr(train, key) < 1:
            raise RecipeError(f"must be >= 1, got {getattr(train, key)}", f"train.{key}")
    if train.keep_last is not None and train.keep_last < 1:
        raise RecipeError(f"must be >= 1 (or null: keep every epoch checkpoint), got {train.keep_last}", "train.keep_last")
    if train.batch_size % train.accumulate:
        raise RecipeError(
            f"train.batch_size={train.batch_size} (the batch of one optimizer step) must be divisible by "
            f"accumulate={train.accumulate}, the micro-batches it is split into", "train.accumulate")
    if train.warmup_iters < 0 or not 0 < train.warmup_ratio <= 1:
        raise RecipeError("warmup_iters must be >= 0 and warmup_ratio in (0, 1]", "train.warmup_ratio")
    if train.optimizer.lr <= 0:
        raise RecipeError(f"must be > 0, got {train.optimizer.lr}", "train.optimizer.lr")
    _validate_optimizer(train.optimizer)
    if list(train.steps) != sorted(train.steps):
        raise RecipeError(f"must be increasing epochs, got {list(train.steps)}", "train.steps")
    if not 0 <= recipe.eval.score_thr <= 1 or not 0 < recipe.eval.nms_thr <= 1:
        raise RecipeError("score_thr must be in [0, 1] and nms_thr in (0, 1]", "eval")
    for key in ("pre_nms_topk", "max_dets", "interval", "batch_size"):
        if getattr(recipe.eval, key) < 1:
            raise RecipeError(f"must be >= 1, got {getattr(recipe.eval, key)}", f"eval.{key}")


def optimizer_names() -> list[str]:
    """The names ``train.optimizer.name`` takes: ``sgd``, ``adamw`` and timm's optimizers (without ``lookahead_``)."""
    names = {"sgd", "adamw"}
    try:
        import timm.optim

        names.update(str(n) for n in timm.optim.list_optimizers())
    except (ImportError, AttributeError):  # pragma: no cover - a timm without the optimizer registry
        pass
    return sorted(names)


_OPTIMIZER_FIELDS = ("lr", "weight_decay", "momentum", "betas", "params")


def _validate_optimizer(opt: OptimizerCfg) -> None:
    import inspect

    names = optimizer_names()
    base = opt.name.lower().removeprefix("lookahead_")
    if base not in names:
        near = close_matches(opt.name, names)
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise RecipeError(
            f"unknown optimizer {opt.name!r}{hint} (sgd, adamw or one of timm's {len(names) - 2}: "
            "timm.optim.list_optimizers())", "train.optimizer.name")
    for key in opt.args:
        if key in _OPTIMIZER_FIELDS:
            raise RecipeError(f"set train.optimizer.{key}, not args.{key}", f"train.optimizer.args.{key}")
    try:
        if base in ("sgd", "adamw"):
            import torch

            cls: Any = torch.optim.SGD if base == "sgd" else torch.optim.AdamW
        else:
            import timm.optim

            cls = timm.optim.get_optimizer_class(base, bind_defaults=False)
        params = inspect.signature(cls).parameters
    except Exception:  # an optional backend (bitsandbytes) missing: timm says so when the optimizer is built
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in opt.args:
        if key not in params:
            near = close_matches(key, [p for p in params if p not in _OPTIMIZER_FIELDS])
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise RecipeError(f"optimizer {opt.name!r} has no parameter {key!r}{hint}", f"train.optimizer.args.{key}")


def _validate_data(data: DataCfg) -> None:
    from .._limits import MAX_IMAGE_SIDE

    sizes = (data.image_size,) if isinstance(data.image_size, int) else data.image_size
    if any(s < 32 for s in sizes):
        raise RecipeError(f"must be >= 32 pixels, got {data.image_size!r}", "data.image_size")
    if any(s > MAX_IMAGE_SIDE for s in sizes):
        raise RecipeError(f"must be <= {MAX_IMAGE_SIDE} pixels (lossreg's limit), got {data.image_size!r}", "data.image_size")
    if data.num_workers < 0:
        raise RecipeError(f"must be >= 0, got {data.num_workers}", "data.num_workers")
    for split in ("train", "val"):
        ds = getattr(data, split)
        if ds is None:
            continue
        if ds.format == "coco" and (ds.ann_file is None or ds.root is None):
            raise RecipeError("a coco dataset needs 'ann_file' (JSON) and 'root' (image folder)", f"data.{split}")
        if ds.format == "voc" and ds.root is None:
            raise RecipeError("a voc dataset needs 'root' (the folder holding Annotations/)", f"data.{split}")
        if ds.max_images is not None and ds.max_images < 1:
            raise RecipeError(f"must be >= 1 (the first N images of the split), got {ds.max_images}", f"data.{split}.max_images")
        from ..data.dataset import check_dataset_params

        try:
            check_dataset_params(ds)
        except TypeError as exc:
            raise RecipeError(str(exc), f"data.{split}.params") from None
    if data.augment:
        try:
            import albumentations as A

            from ..data.transforms import build_augmentation
        except ImportError:  # pragma: no cover - a declared dependency
            return
        for i, spec in enumerate(data.augment):
            if not isinstance(getattr(A, spec.name, None), type):
                names = [n for n in dir(A) if n[:1].isupper()]
                near = close_matches(spec.name, names)
                hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
                raise RecipeError(f"unknown albumentations transform {spec.name!r}{hint}", f"data.augment[{i}].name")
            try:  # its parameters too: a misspelled one would fail only when training starts
                build_augmentation(spec, f"augment[{i}]")
            except (TypeError, ValueError) as exc:
                raise RecipeError(str(exc).removeprefix(f"augment[{i}]: "), f"data.augment[{i}]") from None
