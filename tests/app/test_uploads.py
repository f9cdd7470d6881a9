"""Every branch of the Train page's uploads, through the view-model calls the page makes
(``receive_upload`` for the data file and the evaluation file, ``load_choice`` for the data
they make): CSV and NPZ, a valid and a malformed one of each, an evaluation file that
matches and one that does not. A rejected file is never kept; one a run uses is never
deleted. (AppTest cannot drive ``st.file_uploader``; tests/app/test_browser.py uploads
through a real browser.)"""

from __future__ import annotations

import io

import numpy as np
import pytest

from attrcore import RunStore, SimulationConfig, TrainConfig
from attrcore import app as sup
from attrcore.errors import AttrcoreError, DataError


def csv_bytes(n=60, seed=0, columns=("a", "b", "c"), label="label") -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(columns)))
    y = np.where(X[:, 0] > 0, "yes", "no")
    rows = [",".join((*columns, label)), *(",".join((*map(str, x), c)) for x, c in zip(X, y))]
    return ("\n".join(rows) + "\n").encode()


def npz_bytes(n=60, seed=0, d=3, **extra) -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=(X[:, 0] > 0).astype(np.int64), **extra)
    return buf.getvalue()


def uploads_left(home) -> list[str]:
    folder = home / "uploads"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_csv_upload_offers_its_columns_and_is_kept_once(attrcore_home):
    up = sup.receive_upload(attrcore_home, "my data.csv", csv_bytes())
    assert up.columns == ("a", "b", "c", "label") and up.label_index == 3  # "label" guessed
    assert up.path.is_file() and up.path.name == "my_data.csv"
    again = sup.receive_upload(attrcore_home, "renamed.csv", csv_bytes())  # every rerun re-sends the bytes
    assert again.path == up.path and uploads_left(attrcore_home) == ["my_data.csv"]
    ds = sup.load_choice(attrcore_home, sup.DataChoice(str(up.path), label_column="label"))
    assert ds.n_train + ds.n_test == 60 and ds.class_names == ("no", "yes")


def test_an_npz_upload_has_no_columns_to_pick(attrcore_home):
    up = sup.receive_upload(attrcore_home, "points.npz", npz_bytes())
    assert up.columns is None and up.path.suffix == ".npz"
    ds = sup.load_choice(attrcore_home, sup.DataChoice(str(up.path), test_fraction=0.0))
    assert ds.n_train == 60 and ds.n_test == 0


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("model.pkl", b"\x80\x04K\x01.", "neither a .csv nor an .npz"),
        ("empty.csv", b"", "empty"),
        ("latin1.csv", "poids,taille,étiquette\n1,2,x\n".encode("latin-1"), "cannot read"),  # not UTF-8
        ("quote.csv", b'"unclosed,b,label\n1,2,x\n', "cannot read"),
    ],
)
def test_a_file_rejected_on_arrival_is_not_kept(attrcore_home, name, data, words):
    with pytest.raises(DataError, match=words):
        sup.receive_upload(attrcore_home, name, data)
    assert uploads_left(attrcore_home) == []


@pytest.mark.parametrize(
    ("name", "data", "choice", "words"),
    [
        ("broken.npz", b"PK\x03\x04 not really a zip", {}, "npz"),
        ("pickled.npz", npz_bytes(groups=np.array([{"a": 1}] * 60, dtype=object)), {}, "pickle"),
        ("no-y.npz", b"", {}, None),  # replaced below: an NPZ without labels
        ("text.csv", b"a,b,label\n1,x,yes\n2,y,no\n3,z,yes\n4,w,no\n5,v,yes\n", {"label_column": "label"}, "numeric"),
        ("one-class.csv", b"a,label\n1,x\n2,x\n3,x\n4,x\n", {"label_column": "label"}, "class"),
    ],
)
def test_a_file_rejected_when_loaded_is_deleted(attrcore_home, name, data, choice, words):
    if name == "no-y.npz":
        buf = io.BytesIO()
        np.savez(buf, X=np.ones((10, 2)))
        data, words = buf.getvalue(), "y"
    up = sup.receive_upload(attrcore_home, name, data)
    assert uploads_left(attrcore_home)
    with pytest.raises(AttrcoreError) as err:
        sup.load_choice(attrcore_home, sup.DataChoice(str(up.path), **choice))
    assert words.lower() in str(err.value).lower()
    assert uploads_left(attrcore_home) == []  # the page still holds the bytes; the store does not


@pytest.mark.parametrize("kind", ["csv", "npz"])
def test_an_evaluation_file_becomes_the_test_split(attrcore_home, kind):
    make = csv_bytes if kind == "csv" else npz_bytes
    train = sup.receive_upload(attrcore_home, f"train.{kind}", make(120))
    held = sup.receive_upload(attrcore_home, f"holdout.{kind}", make(25, seed=1))
    label = {"label_column": "label"} if kind == "csv" else {}
    choice = sup.DataChoice(str(train.path), eval_source=str(held.path), test_fraction=0.3, **label)
    ds = sup.load_choice(attrcore_home, choice)
    assert ds.n_train == 120 and ds.n_test == 25  # every training row is trained on
    assert len(uploads_left(attrcore_home)) == 2


def test_an_evaluation_file_that_does_not_match_rejects_both_uploads(attrcore_home):
    train = sup.receive_upload(attrcore_home, "train.csv", csv_bytes(120))
    other = sup.receive_upload(attrcore_home, "other.csv", csv_bytes(25, columns=("a", "b", "zzz")))
    choice = sup.DataChoice(str(train.path), label_column="label", eval_source=str(other.path))
    with pytest.raises(AttrcoreError, match="missing .c., unexpected .zzz."):
        sup.load_choice(attrcore_home, choice)
    assert uploads_left(attrcore_home) == []
    # with more features than the training file (an NPZ): the same
    train = sup.receive_upload(attrcore_home, "train.npz", npz_bytes(120))
    wide = sup.receive_upload(attrcore_home, "wide.npz", npz_bytes(25, d=5))
    with pytest.raises(AttrcoreError, match="feature"):
        sup.load_choice(attrcore_home, sup.DataChoice(str(train.path), eval_source=str(wide.path)))
    assert uploads_left(attrcore_home) == []


def test_a_rejected_choice_never_deletes_an_upload_a_run_uses(attrcore_home):
    train = sup.receive_upload(attrcore_home, "train.csv", csv_bytes(120))
    data = sup.DataChoice(str(train.path), label_column="label")
    sup.TrainRequest(
        data=data, name="uses-it", hidden=(4,), train=TrainConfig(epochs=1), simulation=SimulationConfig(horizon=0)
    ).fit_and_save(RunStore(attrcore_home))
    bad = sup.receive_upload(attrcore_home, "bad.csv", csv_bytes(25, columns=("a", "b", "zzz")))
    with pytest.raises(AttrcoreError):
        sup.load_choice(attrcore_home, sup.DataChoice(str(train.path), label_column="label", eval_source=str(bad.path)))
    assert train.path.is_file() and not bad.path.exists()
    with pytest.raises(AttrcoreError):  # a wrong label column on the same file: still kept
        sup.load_choice(attrcore_home, sup.DataChoice(str(train.path), label_column="nope"))
    assert train.path.is_file()
