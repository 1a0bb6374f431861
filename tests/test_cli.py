"""CLI usage errors are clear and exit with 2; doctor reports what is present and missing."""

import json

from nasloop.cli import main


def test_eval_of_a_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope.py")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_eval_of_an_unknown_dataset_names_the_known_ones(tmp_path, capsys):
    model = tmp_path / "m.py"
    model.write_text("class Net: pass\n")
    assert main(["eval", str(model), "--dataset", "fashoin-mnist"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'fashoin-mnist'" in err and "fashion-mnist" in err


def test_unknown_stage_is_named(tmp_path, capsys):
    model = tmp_path / "m.py"
    model.write_text("class Net: pass\n")
    assert main(["eval", str(model), "--dataset", "digits", "--stages", "static,trian"]) == 2
    assert "unknown evaluation stage 'trian'" in capsys.readouterr().err


def test_search_config_typo_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("budget:\n  iteratons: 3\n")
    assert main(["search", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert "budget.iteratons: unknown key" in capsys.readouterr().err


def test_show_of_a_directory_without_a_run(tmp_path, capsys):
    assert main(["show", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_doctor_lists_torch_sandbox_datasets_and_the_embedded_model(capsys):
    assert main(["doctor", "--json"]) == 0
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)}
    assert checks["torch"]["ok"]
    assert "sandbox isolation" in checks and "dataset digits" in checks and checks["dataset digits"]["ok"]
    assert "model qwen2.5-coder-1.5b" in checks and "llama-cpp-python" in checks
    for check in checks.values():
        assert check["ok"] or check["fix"] or check["name"] == "cuda"


def test_the_summary_says_when_candidates_completed_without_the_selection_metric(capsys, tmp_path):
    from nasloop.cli import _print_summary
    from nasloop.engine import RunSummary

    _print_summary(RunSummary(tmp_path, 3, 3, 2, None, "val_acc", "iteration budget reached (3)"))
    assert "2 candidate(s) completed, none with the metric 'val_acc': set `objective`" in capsys.readouterr().out
    _print_summary(RunSummary(tmp_path, 3, 3, 0, None, "val_acc", "iteration budget reached (3)"))
    assert "no candidate completed" in capsys.readouterr().out
