"""Any bytes as input give one line, never a traceback (issue 17, item 2): damaged or odd CSV, Parquet and .npz
files to `dtl ingest`, model directories whose files disagree or lack calibration.json to `dtl predict`, a
hand-edited study.json to `dtl study --resume` and `dtl report`; then random and mutated files (hypothesis) to
every reader and to `dtl predict`: only UserInputError escapes, the CLI exits 2 and leaves no output behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dtl_dist.cli import app
from dtl_dist.errors import UserInputError
from dtl_dist.library.ingest import Source, ingest

runner = CliRunner()
GRID = np.arange(400.0, 2501.0, 20.0)
INGEST = ["--units", "reflectance_fraction", "--grid", "400:2500:20", "-q"]


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line(result, match=""):
    """Exit 2 and exactly one line on stderr, no traceback."""
    assert result.exit_code == 2 and (result.exception is None or isinstance(result.exception, SystemExit)), \
        (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    assert match in lines[0], lines[0]


def _left(folder: Path, name: str) -> list[str]:
    """What a failed write left in ``folder``: the output itself or a temporary sibling of it."""
    return [p.name for p in folder.iterdir() if p.name == name or p.name.startswith(f".{name}.tmp-")]


def _table(n: int = 6, seed: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(np.random.default_rng(seed).uniform(0.2, 0.6, (n, GRID.size)),
                         columns=[f"{w:g}" for w in GRID])
    frame.insert(0, "id", [f"s{i}" for i in range(n)])
    frame.insert(1, "soc", np.linspace(0.5, 3.0, n))
    return frame


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good CSV, Parquet and .npz files of the same six reflectance spectra."""
    folder = tmp_path_factory.mktemp("good")
    frame = _table()
    frame.to_csv(folder / "good.csv", index=False)
    frame.to_parquet(folder / "good.parquet")
    np.savez_compressed(folder / "good.npz", X=frame[[f"{w:g}" for w in GRID]].to_numpy(), wavelengths=GRID,
                        y=frame.soc.to_numpy(), sample_id=frame.id.to_numpy().astype(str))
    return folder


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _swap(header: str, i: int, j: int) -> str:
    names = header.split(",")
    names[i], names[j] = names[j], names[i]
    return ",".join(names)


BAD_FILES = {
    # name: (make(good_folder, path) -> path, words of the message)
    "binary.csv": (lambda g, p: p.write_bytes(os.urandom(2000)) and p, "not UTF-8 text"),
    "latin1.csv": (lambda g, p: p.write_bytes((g / "good.csv").read_bytes().replace(b"soc", b"s\xf6c", 1)) and p,
                   "not UTF-8 text"),
    "ragged.csv": (lambda g, p: _write(p, [*_lines(g / "good.csv")[:3], _lines(g / "good.csv")[3] + ",7,7",
                                           *_lines(g / "good.csv")[4:]]), "Expected 108 fields in line 4, saw 110"),
    "short.csv": (lambda g, p: _write(p, [*_lines(g / "good.csv")[:2], _lines(g / "good.csv")[2].rsplit(",", 3)[0],
                                          *_lines(g / "good.csv")[3:]]), "row 2, column '2460': spectral value nan"),
    "quoted.csv": (lambda g, p: _write(p, ['"' + _lines(g / "good.csv")[0] + '"', *_lines(g / "good.csv")[1:]]),
                   "the header row is one quoted field"),
    "nul.csv": (lambda g, p: p.write_bytes((g / "good.csv").read_bytes().replace(b",500,", b",5\x000,", 1)) and p,
                "NUL bytes"),
    "duplicate.csv": (lambda g, p: _write(p, [_lines(g / "good.csv")[0].replace(",420,", ",400.0,", 1),
                                              *_lines(g / "good.csv")[1:]]), "duplicated wavelength 400 nm"),
    "non-monotone.csv": (lambda g, p: _write(p, [_swap(_lines(g / "good.csv")[0], 3, 4), *_lines(g / "good.csv")[1:]]),
                         "wavelengths are not increasing"),
    "truncated.parquet": (lambda g, p: p.write_bytes((g / "good.parquet").read_bytes()[:1500]) and p,
                          "not a readable Parquet file"),
    "truncated.npz": (lambda g, p: p.write_bytes((g / "good.npz").read_bytes()[:1500]) and p,
                      "not a readable .npz archive"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_to_ingest_is_one_line_and_writes_nothing(files, tmp_path, name):
    make, message = BAD_FILES[name]
    path = tmp_path / name
    make(files, path)
    target = ["--target", "y"] if name.endswith(".npz") else ["--target", "soc", "--id-column", "id"]
    _one_line(_run("ingest", path, *INGEST, *target, "--out", tmp_path / "out.zarr"), message)
    assert _left(tmp_path, "out.zarr") == []


def test_a_binary_csv_exits_2_from_the_installed_command(tmp_path):
    """The real entry point, as a user runs it (today: UnicodeDecodeError, exit 1)."""
    (tmp_path / "x.csv").write_bytes(bytes(range(256)) * 8)
    proc = subprocess.run([sys.executable, "-m", "dtl_dist.cli", "ingest", "x.csv", "--units", "absorbance",
                           "--out", "x.zarr"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not UTF-8 text" in proc.stderr, proc.stderr
    assert _left(tmp_path, "x.zarr") == []


# --- model directories ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A PLS and a 1D-CNN model directory on GRID, each with its calibration residuals."""
    from dtl_dist.linear.saved import save_pls
    from dtl_dist.nn.builder import CNNConfig, build_cnn
    from dtl_dist.nn.model_dir import save_model
    from dtl_dist.study.intervals import save_calibration

    folder = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(1)
    save_pls(folder / "pls", x_mean=np.zeros(GRID.size), coef=rng.normal(0, 0.1, GRID.size), intercept=1.5,
             ncomp=3, wavelengths=GRID)
    save_model(folder / "cnn", CNNConfig(), [build_cnn(CNNConfig(), GRID.size).state_dict()], wavelengths=GRID)
    for name in ("pls", "cnn"):
        save_calibration(folder / name, np.linspace(0.1, 1.0, 20), how="test")
    return folder


def _edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


MODEL_EDITS = {
    # name: (model, edit(model_dir), words of the message)
    "no calibration.json": ("pls", lambda d: (d / "calibration.json").unlink(), "no calibration.json"),
    "fewer wavelengths than weights (PLS)": (
        "pls", lambda d: _edit_json(d / "wavelengths.json", lambda v: v.update(wavelengths=v["wavelengths"][:-3])),
        "files disagree"),
    "fewer wavelengths than weights (CNN)": (
        "cnn", lambda d: _edit_json(d / "wavelengths.json", lambda v: v.update(wavelengths=v["wavelengths"][:-3])),
        "files disagree"),
    "config n_bands against the weights": ("cnn", lambda d: _edit_json(d / "model.json", lambda v: v.update(n_bands=50)),
                                           "files disagree"),
    "config n_folds against the weights": ("cnn", lambda d: _edit_json(d / "model.json", lambda v: v.update(n_folds=3)),
                                           "files disagree"),
    "n_folds of the wrong type": ("cnn", lambda d: _edit_json(d / "model.json", lambda v: v.update(n_folds="1")),
                                  "files disagree"),
    "preprocessing.json a list": ("pls", lambda d: (d / "preprocessing.json").write_text("[1, 2]"), "expected an object"),
    "an unknown preprocessing step": (
        "pls", lambda d: _edit_json(d / "preprocessing.json", lambda v: v.update(steps=["msc"])), "steps ['msc']"),
    "truncated weights": ("pls", lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00"),
                          "cannot read model.safetensors"),
    "calibration of the wrong type": ("pls", lambda d: (d / "calibration.json").write_text('{"abs_residuals": "x"}'),
                                      "calibration.json: unreadable"),
}


@pytest.mark.parametrize("name", sorted(MODEL_EDITS))
def test_a_model_dir_whose_files_disagree_is_one_line_and_writes_nothing(files, models, tmp_path, name):
    kind, edit, message = MODEL_EDITS[name]
    model = tmp_path / "model"
    shutil.copytree(models / kind, model)
    edit(model)
    result = _run("predict", "--model", model, "--spectra", files / "good.csv", "--units", "reflectance_fraction",
                  "--id-column", "id", "--out", tmp_path / "soc.csv", "-q")
    _one_line(result, message)
    assert _left(tmp_path, "soc.csv") == []


def test_the_good_model_dirs_predict(files, models, tmp_path):
    for kind in ("pls", "cnn"):
        result = _run("predict", "--model", models / kind, "--spectra", files / "good.csv", "--units",
                      "reflectance_fraction", "--id-column", "id", "--out", tmp_path / f"{kind}.csv", "-q")
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(tmp_path / f"{kind}.csv")) == 6


# --- study.json ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("study, message", [
    ('{"options": {}, "config": {"library": "l", "site": "s", "out": "o", "k": "100"}}', "config k is '100'"),
    ('{"options": [], "config": {}}', "expected a JSON object with an 'options' object"),
    ('{"options": {}, "config": {"library": "l", "site": "s", "out": "o", "bogus": 1}}', "unknown key 'bogus'"),
    ('{"options": {', "unreadable JSON"),
])
def test_a_hand_edited_study_json_is_one_line(tmp_path, study, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "study.json").write_text(study)
    (run / "metrics.csv").write_text("model\n")
    _one_line(_run("study", "--library", tmp_path / "l.zarr", "--site", tmp_path / "s.zarr", "--out", run,
                   "--resume"), message)
    _one_line(_run("report", run), message)
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv", "study.json"]


# --- random and mutated bytes (hypothesis) -------------------------------------------------------------------

def _mutate(data: bytes, edits) -> bytes:
    """Apply (kind, position, byte) edits: flip a byte, cut the file, insert or delete a byte."""
    data = bytearray(data)
    for kind, where, value in edits:
        i = where % (len(data) + 1)
        if kind == "flip" and i < len(data):
            data[i] ^= value or 1
        elif kind == "cut":
            del data[i:]
        elif kind == "insert":
            data[i:i] = bytes([value])
        elif kind == "delete" and i < len(data):
            del data[i]
    return bytes(data)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 2**20),
                           st.integers(0, 255)), min_size=1, max_size=4)
SUFFIXES = {".csv": "good.csv", ".parquet": "good.parquet", ".npz": "good.npz"}
FAST = settings(max_examples=int(os.environ.get("DTL_FUZZ_EXAMPLES", 40)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _content(files: Path, suffix: str, random_bytes: bytes | None, edits) -> bytes:
    return random_bytes if random_bytes is not None else _mutate((files / SUFFIXES[suffix]).read_bytes(), edits)


@FAST
@given(suffix=st.sampled_from(sorted(SUFFIXES)), random_bytes=st.one_of(st.none(), st.binary(max_size=3000)),
       edits=EDITS)
def test_every_reader_lets_only_user_errors_escape(files, suffix, random_bytes, edits):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = folder / f"input{suffix}"
        path.write_bytes(_content(files, suffix, random_bytes, edits))
        source = Source(str(path), units="reflectance_fraction", target="y" if suffix == ".npz" else "soc",
                        id_column=None if suffix == ".npz" else "id")
        try:
            lib = ingest([source], folder / "out.zarr", grid="400:2500:20", progress=False)
        except UserInputError as exc:
            assert "\n" not in str(exc)
            assert _left(folder, "out.zarr") == []
        else:
            assert lib.n_samples >= 1 and np.isfinite(lib.spectra()).all()


@FAST
@given(suffix=st.sampled_from(sorted(SUFFIXES)), random_bytes=st.one_of(st.none(), st.binary(max_size=3000)),
       edits=EDITS)
def test_predict_on_any_spectra_file_exits_0_or_2(files, models, suffix, random_bytes, edits):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = folder / f"input{suffix}"
        path.write_bytes(_content(files, suffix, random_bytes, edits))
        ids = [] if suffix == ".npz" else ["--id-column", "id"]
        result = _run("predict", "--model", models / "pls", "--spectra", path, "--units", "reflectance_fraction",
                      *ids, "--out", folder / "soc.csv", "-q")
        if result.exit_code == 2:
            _one_line(result)
            assert _left(folder, "soc.csv") == []
        else:
            assert result.exit_code == 0, (result.output, result.exception)
            assert np.isfinite(pd.read_csv(folder / "soc.csv").soc).all()


MODEL_FILES = ["model.json", "wavelengths.json", "preprocessing.json", "calibration.json", "model.safetensors"]


@FAST
@given(kind=st.sampled_from(["pls", "cnn"]), name=st.sampled_from(MODEL_FILES),
       random_bytes=st.one_of(st.none(), st.binary(max_size=500)), edits=EDITS)
def test_predict_with_any_damaged_model_file_exits_0_or_2(files, models, kind, name, random_bytes, edits):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = folder / "model"
        shutil.copytree(models / kind, model)
        good = (model / name).read_bytes()
        (model / name).write_bytes(random_bytes if random_bytes is not None else _mutate(good, edits))
        result = _run("predict", "--model", model, "--spectra", files / "good.csv", "--units",
                      "reflectance_fraction", "--id-column", "id", "--out", folder / "soc.csv", "-q")
        if result.exit_code == 2:
            _one_line(result)
            assert _left(folder, "soc.csv") == []
        else:
            assert result.exit_code == 0, (result.output, result.exception)
