"""The paper-scale recipes of issue 7 (HCRAL and ALWA experiments) and the BCCD fine-tuning ones."""

from __future__ import annotations

import re

import pytest

import lossreg
from lossreg.recipe import find_recipe, list_recipes

HCRAL_RET = {f"retinanet_r50_{c}_l1" for c in ("focal", "qfl", "vfl", "dr", "hcra_c")} | {
    f"retinanet_r50_focal_{r}" for r in ("eiou", "focal_eiou", "alpha_iou", "hcra_r")
} | {"retinanet_r50_hcra_c_hcra_r"}
HCRAL_ATSS = {f"atss_r50_{c}_giou" for c in ("focal", "qfl", "vfl", "hcra_c")} | {
    f"atss_r50_focal_{r}" for r in ("focal_eiou", "alpha_iou", "hcra_r")
}
HCRAL_FCOS = {"fcos_atss_r50_hcral_eatss", "fcos_atss_r50_hcral_eatss_aux"}
ALWA = (
    {f"faster_rcnn_r50_{b}_{r}" for b in ("static", "alwa1", "alwa2") for r in ("l1", "smooth_l1", "ciou")}
    | {f"{d}_r50_{b}_{r}_voc" for d in ("faster_rcnn", "retinanet") for b in ("static", "alwa1", "alwa2")
       for r in ("l1", "smooth_l1", "ciou")}
    | {f"{d}_r50_{b}_l1_voc" for d in ("faster_rcnn", "retinanet") for b in ("dwa", "dtp", "guided")}
)
BCCD = {"bccd_atss_r18", "bccd_atss_r18_hcral"}
PAPER = HCRAL_RET | HCRAL_ATSS | HCRAL_FCOS | ALWA


def _load(names):
    return {n: lossreg.load_recipe(n) for n in sorted(names)}


def test_all_recipes_present():
    missing = (PAPER | BCCD) - set(list_recipes())
    assert not missing, sorted(missing)


@pytest.mark.parametrize("name", sorted(PAPER | BCCD))
def test_recipe_validates(name):
    recipe = lossreg.load_recipe(name)  # validation on: components and their params
    assert recipe.name == name
    assert recipe.description and "\n" not in recipe.description


@pytest.mark.parametrize("name", sorted(PAPER | BCCD))
def test_expected_result_comment(name):
    lines = find_recipe(name).read_text(encoding="utf-8").splitlines()
    header = [ln for ln in lines if ln.startswith("#")]
    expected = [ln for ln in header if ln.startswith("# Expected:")]
    assert expected, f"{name}: no '# Expected:' comment line"
    text = " ".join(header)
    if name in BCCD:
        assert "none" in expected[0]
    else:
        # a paper number with its metric, or an explicit statement that none is reported
        assert re.search(r"\d+\.\d+ m?AP|none reported|no mAP", text), expected[0]
        assert "Table" in text or "none reported" in text


def _names(recipes, field):
    return {getattr(r.model, field).name for r in recipes.values() if getattr(r.model, field) is not None}


def test_hcral_retinanet_losses():
    rs = _load(HCRAL_RET)
    assert {r.model.arch for r in rs.values()} == {"retinanet"}
    assert _names(rs, "cls_loss") >= {"focal", "qfl", "vfl", "dr", "hcra_c"}
    assert _names(rs, "reg_loss") >= {"l1", "eiou", "focal_eiou", "alpha_iou", "hcra_r"}
    for r in rs.values():
        assert (r.train.epochs, r.train.batch_size, r.train.optimizer.lr, r.train.warmup_ratio) == (12, 16, 0.01, 0.1)
        if r.model.reg_loss.name != "l1":
            assert r.model.reg_loss.params["loss_weight"] == 2.5
        if r.model.reg_loss.name == "hcra_r":
            assert r.model.reg_loss.params["gamma"] == 1.2 and r.model.reg_loss.params["alpha"] == -0.1


def test_dr_recipe_follows_the_authors():
    # idstcv/DR_loss: SigmoidDRLoss (batch-pooled, tau 4) with configs/dr_retina/dr_R-50-FPN_1x.yaml's
    # BG_IOU_THRESHOLD 0.5, PRIOR_PROB 0.5 and INFERENCE_TH 0.2.
    r = lossreg.load_recipe("retinanet_r50_dr_l1")
    assert r.model.cls_loss.name == "dr"
    loss = lossreg.create_loss("dr", **r.model.cls_loss.params)
    assert (loss.tau, loss.grouping, loss.margin, loss.L) == (4.0, "batch", 0.5, 6.0)
    assert r.model.assigner.params["neg_iou_thr"] == r.model.assigner.params["pos_iou_thr"] == 0.5
    assert r.model.head.params["prior_prob"] == 0.5 and r.eval.score_thr == 0.2


def test_hcral_atss_losses():
    rs = _load(HCRAL_ATSS)
    assert {r.model.arch for r in rs.values()} == {"atss"}
    assert _names(rs, "cls_loss") >= {"focal", "qfl", "vfl", "hcra_c"}
    assert _names(rs, "reg_loss") >= {"giou", "focal_eiou", "alpha_iou", "hcra_r"}
    for r in rs.values():
        assert (r.train.epochs, r.train.batch_size, r.train.optimizer.lr, r.train.warmup_ratio) == (12, 16, 0.01, 0.001)
        if r.model.reg_loss.name == "hcra_r":
            # HCRAL section 4.1: "ATSS ... set the weight to 1.5" (gamma of t = exp(-q^2 / gamma))
            assert r.model.reg_loss.params["gamma"] == 1.5 and r.model.reg_loss.params["alpha"] == -0.1


def test_hcral_fcos_atss():
    plain, aux = (lossreg.load_recipe(n) for n in ("fcos_atss_r50_hcral_eatss", "fcos_atss_r50_hcral_eatss_aux"))
    assert plain.model.arch == "fcos" and plain.model.head.name == "fcos"
    assert aux.model.arch == "vfnet" and aux.model.head.name == "vfnet"
    assert aux.model.head.params.get("star_dcn", True) and aux.model.head.params.get("refine", True)
    for r in (plain, aux):
        assert r.model.assigner.name == "eatss"
        assert (r.model.cls_loss.name, r.model.reg_loss.name) == ("hcra_c", "hcra_r")
        assert r.model.reg_loss.params["gamma"] == 1.5  # ATSS sample selection: the paper's ATSS gamma
        assert r.train.batch_size == 16 and r.train.optimizer.lr == 0.01
    assert plain.train.epochs == 24 and aux.train.epochs == 12


def test_alwa_balancers_and_losses():
    rs = _load(ALWA)
    for arch in ("faster_rcnn", "retinanet"):
        sub = {n: r for n, r in rs.items() if r.model.arch == arch}
        assert _names(sub, "balancer") >= {"alwa1", "alwa2", "dwa", "dtp", "guided"}
        assert _names(sub, "reg_loss") >= {"l1", "smooth_l1", "ciou"}
    for n, r in rs.items():
        assert r.train.epochs == 12 and r.train.optimizer.lr == 0.01
        assert (r.train.optimizer.momentum, r.train.optimizer.weight_decay) == (0.9, 0.0001)
        if r.model.balancer.name in ("alwa1", "alwa2"):
            assert r.model.balancer.params["interval"] == 100 and r.model.balancer.params["lambda0"] == 1.0
        if n.endswith("_voc"):
            assert r.model.num_classes == 20
            assert (r.data.train.format, r.data.train.root, r.data.train.split) == (
                "voc", "data/VOCdevkit/VOC2012", "trainval")
            assert (r.data.val.root, r.data.val.split) == ("data/VOCdevkit/VOC2007", "test")
        else:
            assert r.data.train.format == "coco"
            assert r.data.train.ann_file == "data/coco/annotations/instances_train2017.json"


def test_bccd_recipes_point_at_voc_data():
    base, hcral = (lossreg.load_recipe(n) for n in ("bccd_atss_r18", "bccd_atss_r18_hcral"))
    for r in (base, hcral):
        assert r.model.arch == "atss" and r.model.backbone == "resnet18" and r.model.num_classes == 3
        assert r.data.image_size == 512
        assert (r.data.train.format, r.data.train.split, r.data.val.split) == ("voc", "train", "val")
        assert r.data.train.root.endswith("shared/data/bccd/BCCD") and r.data.val.root == r.data.train.root
        assert r.train.epochs <= 12
    assert (hcral.model.cls_loss.name, hcral.model.reg_loss.name, hcral.model.assigner.name) == (
        "hcra_c", "hcra_r", "eatss")
    assert hcral.model.reg_loss.params["gamma"] == 1.5
    assert base.data == hcral.data and base.train == hcral.train


def test_bccd_data_builds():
    from pathlib import Path

    from lossreg.data import build_dataset

    recipe = lossreg.load_recipe("bccd_atss_r18")
    if not Path(recipe.data.train.root).is_dir():
        pytest.skip(f"BCCD not on disk at {recipe.data.train.root}")
    train = build_dataset(recipe.data.train, recipe.data, train=True)
    val = build_dataset(recipe.data.val, recipe.data, train=False, class_names=train.class_names)
    assert sorted(train.class_names) == ["Platelets", "RBC", "WBC"]
    assert len(train) > len(val) > 0
