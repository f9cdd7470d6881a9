"""``python -m attrcore mislabel / marks / relabel / export``: the contract (table, ranking
CSV, REPORT.json) and the errors a user can cause (``error: …``, exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attrcore.cli.main import main
from attrcore.mislabel import Mark, save_marks
from attrcore.store import RunStore

DIGITS = ["--train", "digits", "--epochs", "3", "--hidden", "16", "--test-fraction", "0.5"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_mislabel_prints_the_auc_table_and_writes_ranking_and_report(capsys, tmp_path):
    report, ranking = tmp_path / "r.json", tmp_path / "rank.csv"
    code, out, err = run_cli(
        capsys,
        "mislabel",
        *DIGITS,
        "--noise",
        "0.1",
        "--seed",
        "0",
        "--signals",
        "forward-only,loss,confidence",
        "--report",
        str(report),
        "--out",
        str(ranking),
        "--fix-top",
        "0.15",
        "--run",
        "noisy",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["signal", "ROC-AUC"]
    assert any(line.startswith("forward-only") for line in lines)
    assert "fixed the top 15% by forward-only" in out
    doc = json.loads(report.read_text())
    assert set(doc["signals"]) == {
        "forward-only self-influence (loss)",
        "training loss (control)",
        "confidence in the given label (control)",
    }
    for row in doc["signals"].values():
        assert 0.5 < row["auc"] <= 1 and 0 < row["ap"] <= 1
    assert doc["n_flipped"] == round(0.1 * doc["n_train"]) and doc["fix"]["fraction"] == 0.15
    df = pd.read_csv(ranking)
    assert len(df) == doc["n_train"] and {"index", "given_label", "flipped", "forward-only_rank"} <= set(df.columns)
    assert RunStore().exists("noisy")


def test_class_conditional_noise_from_the_cli(capsys, tmp_path):
    report = tmp_path / "r.json"
    code, out, err = run_cli(
        capsys,
        "mislabel",
        *DIGITS,
        "--noise",
        "0.4",
        "--noise-pairs",
        "7:1,2:5",
        "--signals",
        "loss",
        "--report",
        str(report),
    )
    assert code == 0, err
    doc = json.loads(report.read_text())
    assert doc["data"]["noise_pairs"] == [["7", "1"], ["2", "5"]] and doc["n_flipped"] > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--noise", "1.0"], "label_noise must be in [0, 1)"),
        (["--noise", "0.4", "--noise-pairs", "7:12"], "class '12', which is not in the data"),
        (["--noise", "0.1", "--signals", "forward-only,magic"], "unknown signal 'magic'"),
        (["--noise", "0.1", "--report", "r.txt"], "--report must end in .json"),
    ],
)
def test_bad_input_prints_one_error_line(capsys, flags, message):
    code, _out, err = run_cli(capsys, "mislabel", *DIGITS, *flags)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_marks_relabel_and_export_from_a_csv(capsys, tmp_path):
    assert run_cli(capsys, "mislabel", *DIGITS, "--noise", "0.1", "--signals", "loss", "--run", "r")[0] == 0
    marks = tmp_path / "marks.csv"
    marks.write_text("index,action,label\n0,remove,\n1,relabel,3\n2,keep,\n")
    code, out, err = run_cli(capsys, "marks", "r", "--import", str(marks))
    assert code == 0, err
    assert "3 mark(s)" in out and "relabel" in out
    out_csv = tmp_path / "clean.csv"
    code, out, err = run_cli(capsys, "relabel", "--run", "r", "--out", str(out_csv))
    assert code == 0, err
    assert "applied 3 mark(s)" in out and "test accuracy" in out
    df = pd.read_csv(out_csv)
    assert "change" in df.columns and len(df) == RunStore().load_run("r").meta["n_sources"] - 1
    out_npz = tmp_path / "clean.npz"
    code, out, err = run_cli(
        capsys, "export", "--train", "digits", "--test-fraction", "0.5", "--marks", str(marks), "--out", str(out_npz)
    )
    assert code == 0, err
    with np.load(out_npz, allow_pickle=False) as z:
        assert z["removed_rows"].tolist() == [0] and (z["change"] != "").sum() <= 1


def test_marks_for_a_deleted_run_get_a_clear_error(capsys):
    assert run_cli(capsys, "mislabel", *DIGITS, "--noise", "0.1", "--signals", "loss", "--run", "gone")[0] == 0
    save_marks(RunStore(), "gone", [Mark(0, "remove")])
    assert run_cli(capsys, "delete", "gone")[0] == 0
    for argv in (["marks", "gone"], ["relabel", "--run", "gone"], ["export", "--run", "gone", "--out", "x.csv"]):
        code, _out, err = run_cli(capsys, *argv)
        assert code == 2 and "was deleted, so its 1 mark(s) cannot be applied" in err, err
    code, out, _err = run_cli(capsys, "marks", "gone", "--clear")
    assert code == 0 and "removed 1 mark(s)" in out


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_an_exported_file_trains_as_it_is(capsys, tmp_path, suffix):
    """export → train (and attribute) on the exported file with no editing: the CSV's note
    columns (given_label, change, train_row) are never read as features."""
    marks = tmp_path / "marks.csv"
    marks.write_text("index,action,label\n0,remove,\n1,relabel,3\n")
    out = tmp_path / f"clean{suffix}"
    code, _out, err = run_cli(
        capsys, "export", "--train", "digits", "--test-fraction", "0.5", "--marks", str(marks), "--out", str(out)
    )
    assert code == 0, err
    from attrcore.data import load_dataset

    label = ["--label-column", "label"] if suffix == ".csv" else []
    ds = load_dataset(str(out), label_column=label[1] if label else None, test_fraction=0.0, standardize=False)
    source = load_dataset("digits", test_fraction=0.5)
    assert ds.n_features == source.n_features == 64 and ds.n_train == source.n_train - 1
    # the relabelled row carries its new label; the rows keep their order
    np.testing.assert_allclose(ds.X_train[0], source.X_train[1], rtol=1e-6, atol=1e-6)
    assert ds.class_names[ds.y_train[0]] == "3"
    flags = ["--train", str(out), *label, "--test-fraction", "0", "--epochs", "2", "--hidden", "8", "--horizon", "0"]
    code, _out, err = run_cli(capsys, "train", *flags, "--run", f"again{suffix[1:]}")
    assert code == 0, err
    queries = tmp_path / "q.npz"
    np.savez(queries, X=source.X_test[:3], y=np.asarray(source.class_names)[source.y_test[:3]])
    code, _out, err = run_cli(capsys, "attribute", *flags, "--test", str(queries), "--out", str(tmp_path / "s.npy"))
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (3, ds.n_train)


def test_a_csv_that_merely_has_a_change_column_keeps_it_as_a_feature(tmp_path):
    from attrcore.data import load_dataset

    path = tmp_path / "own.csv"
    pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "change": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]}).to_csv(
        path, index=False
    )
    assert load_dataset(str(path), label_column="y", test_fraction=0.0).feature_names == ("a", "change")
