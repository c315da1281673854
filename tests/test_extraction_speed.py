"""benchmarks/extraction_speed.py: every variant measured on the same images, errors of the changed forwards."""

import json

import pytest

from benchmarks import extraction_speed


def test_smoke_measures_every_variant_against_the_plain_forward(tmp_path, capsys):
    output = tmp_path / "speed.json"
    args = ["--smoke", "--images", "4", "--batch_size", "2", "--rounds", "1", "--backbones", "resnet50", "vit_b16"]
    assert extraction_speed.main([*args, "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert list(results["backbones"]) == ["resnet50", "vit_b16"]
    resnet, vit = results["backbones"]["resnet50"], results["backbones"]["vit_b16"]
    for r in (resnet, vit):
        variants = r["variants"]
        assert variants["forward"]["relative_to_forward"] == 1.0
        assert all(v["images_per_s"] > 0 and len(v["seconds"]) == 1 for v in variants.values())
        assert {"extraction", "extraction, 2 DataLoader workers"} <= set(variants)
        bf16 = variants["forward, inference_mode + bf16 autocast"]
        error = bf16["feature_max_rel_error"]
        assert 0 < error < 0.1 and bf16["exact_enough"] == (error < 1e-2)
    # channels_last only reorders memory (CNNs only): the same features up to float summation order
    assert resnet["variants"]["forward, inference_mode + channels_last"]["feature_max_rel_error"] < 1e-4
    assert "forward, inference_mode + channels_last" not in vit["variants"]
    table = results["table"]
    assert table.count("\n| resnet50 (") == 1 and "| vit_b16 (" in table and "–" in table
    assert "64² per round" in capsys.readouterr().out


def test_unknown_backbone_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        extraction_speed.main(["--smoke", "--backbones", "nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown backbone(s) ['nope']") and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--images", "--batch_size", "--rounds"])
def test_counts_below_one_are_refused_at_the_door(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        extraction_speed.main(["--smoke", flag, "0"])
    assert exit_info.value.code == 2
    assert f"error: {flag} must be >= 1, got 0" in capsys.readouterr().err
