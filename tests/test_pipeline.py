"""The pipeline runner: parameter-set validation, per-notebook cache, atomic replacement on failure.

Uses two toy notebooks written into a temporary root (a few kernel starts, seconds in all).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from scangen.pipeline import cache
from scangen.pipeline import Layout, NotebookFailed, ParamSetError, load_param_set, plan, run
from scangen.pipeline.__main__ import main as cli_main
from scangen.pipeline.params import notebook_parameters

REPO = Layout.default()


def _notebook(path: Path, parameters: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params_cell = nbformat.v4.new_code_cell(parameters)
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), params_cell, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


PRODUCER = """
import json, pathlib
out = pathlib.Path(results_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "producer.json").write_text(json.dumps({"value": value * 2, "set": param_set}))
"""
CONSUMER = """#| label: tbl-consume
import json, pathlib
got = json.loads((pathlib.Path(results_dir) / "producer.json").read_text())["value"]
if fail:
    raise RuntimeError("asked to fail")
(pathlib.Path(results_dir) / "consumer.json").write_text(json.dumps({"value": got + offset}))
"""


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    """A root with two notebooks (producer -> consumer) and a parameter set `toy`.

    The scangen source hash is pinned: the toy notebooks do not import scangen, and the package may
    be edited while the tests run.
    """
    monkeypatch.setattr(cache, "package_sha256", lambda: "pinned")
    layout = Layout.under(tmp_path)
    _notebook(layout.notebooks / "01_producer.ipynb", "param_set = ''\nresults_dir = ''\nvalue = 1", PRODUCER)
    _notebook(layout.notebooks / "02_consumer.ipynb",
              "results_dir = ''\ndata_dir = ''\noffset = 0\nfail = False", CONSUMER)
    _write_set(layout, {"description": "toy", "parameters": {"value": 3},
                        "notebooks": {"01_producer": {}, "02_consumer": {"offset": 10, "data_dir": "data/toy"}}})
    return layout


def _write_set(layout: Layout, body: dict, name: str = "toy") -> Path:
    layout.params.mkdir(parents=True, exist_ok=True)
    path = layout.params / f"{name}.yml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _result(layout: Layout, name: str) -> dict:
    return json.loads((layout.results_dir("toy") / name).read_text())


# --- parameter sets -------------------------------------------------------------------------------

def test_notebook_parameters_reads_literals(toy: Layout) -> None:
    assert notebook_parameters(toy.notebooks / "02_consumer.ipynb") == {"results_dir": "", "data_dir": "",
                                                                         "offset": 0, "fail": False}


def test_param_set_resolution(toy: Layout) -> None:
    pset = load_param_set("toy", toy)
    assert pset.names() == ["01_producer", "02_consumer"]
    first = pset.parameters_for("01_producer", toy)
    assert first == {"param_set": "toy", "results_dir": "results/toy", "value": 3}
    # shared `value` is not declared by the consumer, so it is not injected there;
    # path parameters are injected relative to the root (the kernels' working directory)
    assert pset.parameters_for("02_consumer", toy) == {"data_dir": "data/toy", "offset": 10,
                                                       "results_dir": "results/toy"}
    assert pset.select(["02"]) == ["02_consumer"]
    with pytest.raises(ParamSetError, match="--only '07'"):
        pset.select(["07"])


@pytest.mark.parametrize("body, message", [
    ({"notebooks": {"01_producer": {}}, "paramters": {}}, r"toy\.yml: unknown top-level key 'paramters'"),
    ({"notebooks": {"01_producer": {"valu": 2}}}, r"toy\.yml: notebooks\.01_producer\.valu is not a parameter"),
    ({"parameters": {"sed": 1}, "notebooks": {"01_producer": {}}}, r"toy\.yml: parameters\.sed is not a parameter"),
    ({"notebooks": {"09_missing": {}}}, r"toy\.yml: notebooks\.09_missing: no notebook"),
    ({"notebooks": {"01_producer": {"results_dir": "x"}}}, r"toy\.yml: .*results_dir is set by the runner"),
    ({"notebooks": {}}, r"toy\.yml: 'notebooks' must list"),
    ({"notebooks": ["01_producer"]}, r"toy\.yml: notebooks must be a mapping"),
])
def test_param_set_errors_name_file_and_key(toy: Layout, body: dict, message: str) -> None:
    _write_set(toy, body)
    with pytest.raises(ParamSetError, match=message):
        load_param_set("toy", toy)


def test_unknown_set_and_missing_parameters_cell(toy: Layout) -> None:
    with pytest.raises(ParamSetError, match="no parameter set file .*nope.yml .*known sets: toy"):
        load_param_set("nope", toy)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, toy.notebooks / "03_bare.ipynb")
    with pytest.raises(ParamSetError, match="03_bare.ipynb: expected exactly one code cell tagged 'parameters'"):
        notebook_parameters(toy.notebooks / "03_bare.ipynb")


def test_repository_sets_are_valid() -> None:
    sets = sorted(p.stem for p in REPO.params.glob("*.yml"))
    assert {"smoke", "quick", "full"} <= set(sets)
    for name in sets:
        assert load_param_set(name, REPO).names()


# --- cache ----------------------------------------------------------------------------------------

def test_cache_hits_and_misses(toy: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    logs: list[str] = []
    first = run("toy", toy, log=logs.append)
    assert first.actions == {"01_producer": "executed", "02_consumer": "executed"}
    assert _result(toy, "consumer.json") == {"value": 16}
    assert (toy.executed / "02_consumer.ipynb").is_file()
    assert json.loads((toy.executed / "active-set.json").read_text())["param_set"] == "toy"
    manifest = json.loads(toy.manifest("toy").read_text())["notebooks"]
    assert sorted(manifest["01_producer"]["outputs"]) == ["producer.json"]
    assert sorted(manifest["02_consumer"]["outputs"]) == ["consumer.json"]

    assert run("toy", toy, log=logs.append).actions == {"01_producer": "cached", "02_consumer": "cached"}

    # an override of the consumer re-runs only the consumer
    _write_set(toy, {"parameters": {"value": 3}, "notebooks": {"01_producer": {}, "02_consumer": {"offset": 20, "data_dir": "data/toy"}}})
    _, states = plan("toy", toy)
    assert [s.fresh for s in states] == [True, False] and states[1].reasons == ["parameters"]
    assert run("toy", toy, log=logs.append).actions == {"01_producer": "cached", "02_consumer": "executed"}
    assert _result(toy, "consumer.json") == {"value": 26}

    # a changed upstream output re-runs the producer, whose new output re-runs the consumer
    _write_set(toy, {"parameters": {"value": 5}, "notebooks": {"01_producer": {}, "02_consumer": {"offset": 20, "data_dir": "data/toy"}}})
    assert run("toy", toy, log=logs.append).actions == {"01_producer": "executed", "02_consumer": "executed"}
    assert _result(toy, "consumer.json") == {"value": 30}

    # new content in a data folder named by a path parameter invalidates its reader
    (toy.root / "data" / "toy").mkdir(parents=True)
    (toy.root / "data" / "toy" / "table.csv").write_text("a,b\n")
    assert [s.reasons for s in plan("toy", toy)[1]] == [[], ["data folders"]]
    assert run("toy", toy, log=logs.append).actions == {"01_producer": "cached", "02_consumer": "executed"}

    # a tampered result file, or a source edit, invalidates the notebook that owns it
    (toy.results_dir("toy") / "consumer.json").write_text("{}")
    assert plan("toy", toy)[1][1].reasons == ["output consumer.json was modified"]
    nb = nbformat.read(toy.notebooks / "02_consumer.ipynb", as_version=4)
    nb.cells[2].source += "\n# edited"
    nbformat.write(nb, toy.notebooks / "02_consumer.ipynb")
    assert "notebook source" in plan("toy", toy)[1][1].reasons
    assert run("toy", toy, only=["02"], log=logs.append).actions == {"02_consumer": "executed"}
    monkeypatch.setattr(cache, "package_sha256", lambda: "edited")
    assert all(s.reasons == ["scangen source"] for s in plan("toy", toy)[1])
    assert run("toy", toy, force=True, log=logs.append).actions == {"01_producer": "executed",
                                                                    "02_consumer": "executed"}


def test_path_parameters_are_root_relative() -> None:
    from scangen.pipeline.params import root_relative

    root = Path("/srv/checkout")
    assert root_relative("store_dir", "/srv/checkout/data/x/../y", root) == "data/y"
    assert root_relative("store_dir", "./data/y/", root) == "data/y"
    assert root_relative("import_from", "/elsewhere/features", root) == "/elsewhere/features"
    assert root_relative("size", "/srv/checkout/x", root) == "/srv/checkout/x"  # not a path parameter
    assert root_relative("store_dir", None, root) is None


def test_moved_checkout_reuses_its_cache_and_records_no_machine_path(
        toy: Layout, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Executed copies, result files and the manifest name no folder of this machine, so a copy of
    the whole root elsewhere finds every notebook up to date."""
    import shutil

    (toy.root / "data" / "toy").mkdir(parents=True)
    (toy.root / "data" / "toy" / "table.csv").write_text("a,b\n")
    run("toy", toy, log=lambda _: None)
    root_text = str(toy.root)
    for path in [*toy.build.rglob("*.ipynb"), *toy.build.rglob("*.json"), *toy.results.rglob("*.json")]:
        assert root_text not in path.read_text(), f"{path} names the machine path {root_text}"
    moved = tmp_path_factory.mktemp("elsewhere") / "checkout"
    shutil.copytree(toy.root, moved)
    moved_layout = Layout.under(moved)
    assert all(state.fresh for state in plan("toy", moved_layout)[1]), [s.reasons for s in plan("toy", moved_layout)[1]]
    assert run("toy", moved_layout, log=lambda _: None).actions == {"01_producer": "cached", "02_consumer": "cached"}


def test_failure_keeps_previous_copy_and_manifest(toy: Layout) -> None:
    run("toy", toy, log=lambda _: None)
    good_copy = (toy.runs("toy") / "02_consumer.ipynb").read_bytes()
    published = (toy.executed / "02_consumer.ipynb").read_bytes()
    manifest = toy.manifest("toy").read_text()
    _write_set(toy, {"parameters": {"value": 3}, "notebooks": {"01_producer": {}, "02_consumer": {"offset": 10, "data_dir": "data/toy", "fail": True}}})
    with pytest.raises(NotebookFailed, match=r"notebook 02_consumer failed: cell 'tbl-consume' raised RuntimeError: asked to fail") as info:
        run("toy", toy, log=lambda _: None)
    assert info.value.failed_copy == toy.failed("toy") / "02_consumer.ipynb"
    failed = nbformat.read(info.value.failed_copy, as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in failed.cells if c.cell_type == "code" for o in c.outputs)
    assert (toy.runs("toy") / "02_consumer.ipynb").read_bytes() == good_copy
    assert (toy.executed / "02_consumer.ipynb").read_bytes() == published
    assert toy.manifest("toy").read_text() == manifest
    assert not list(toy.scratch.glob("*.ipynb"))


def test_cli_status_and_error(toy: Layout, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setattr(Layout, "default", classmethod(lambda cls: toy))
    assert cli_main(["status", "--params", "toy"]) == 0
    assert "01_producer" in capsys.readouterr().out
    assert cli_main(["run", "--params", "nope"]) == 1
    assert "no parameter set file" in capsys.readouterr().err


# --- layout ---------------------------------------------------------------------------------------

def test_layout_under_keeps_the_repository_structure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scangen.pipeline.layout import PARAMS_ENV, param_set_from_env

    layout = Layout.under(tmp_path, sources_from=REPO)
    assert layout.notebooks == REPO.notebooks and layout.params == REPO.params
    assert layout.executed == tmp_path.resolve() / "build" / "notebooks"
    assert layout.runs("quick") == tmp_path.resolve() / "build" / "runs" / "quick"
    assert layout.failed("quick") == tmp_path.resolve() / "build" / "failed" / "quick"
    assert layout.manifest("quick") == tmp_path.resolve() / "results" / "quick" / "manifest.json"
    monkeypatch.delenv(PARAMS_ENV, raising=False)
    assert param_set_from_env() == "quick"
    monkeypatch.setenv(PARAMS_ENV, "smoke")
    assert param_set_from_env() == "smoke" and param_set_from_env("full") == "full"


def test_publish_never_leaves_another_sets_notebook_beside_this_set(toy: Layout) -> None:
    """A notebook published by an earlier set but not (yet) run by this one is removed."""
    toy.executed.mkdir(parents=True, exist_ok=True)
    stale = toy.executed / "02_consumer.ipynb"
    stale.write_text("{}")
    run("toy", toy, only=["01"], log=lambda _: None)
    assert (toy.executed / "01_producer.ipynb").is_file()
    assert not stale.exists()
