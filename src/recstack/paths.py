"""The one place that names every artifact. Stages build no path by hand; they ask this module.

input/<dataset>/                  raw input (your download, or built by the `build` stage)
outputs/<track>/<dataset>/<run>/  one run folder per config (`run_name`, by default the config file's name):
    config.yaml                   resolved config of the last run
    logs/                         one log file per run
    leaderboard.csv               every model stage run: metrics, config differences, duration
    <stage>/                      a stage's files + manifest.json (written last); reports/: its plots (PNG)
    report.html                   the run's static page (`./run.sh report`)
outputs/_cache/embed/             encoder outputs by (model, settings, item content), for any dataset
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

MANIFEST = "manifest.json"
LOCK = ".lock"  # in the run folder: held by the run writing it (pipeline.run_lock)
# the repository (src/recstack/paths.py -> two folders up): config paths that point at files shipped beside
# the project (../shared/fixtures) are taken from here, not from wherever the command was started
REPO_ROOT = Path(__file__).resolve().parents[2]


def from_repo(path: str | Path) -> Path:
    """`path` as given if absolute, else relative to the repository root (not the working directory)."""
    path = Path(path)
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


# mmctr raw layout (WWW 2025 MMCTR / MicroLens-1M, as released)
MMCTR_SUBDIR = "MicroLens_1M_x1"
MMCTR_SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class RawMmctr:
    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / MMCTR_SUBDIR

    def split(self, name: str) -> Path:
        return self.data_dir / f"{name}.parquet"

    @property
    def item_info(self) -> Path:
        return self.data_dir / "item_info.parquet"

    @property
    def item_feature(self) -> Path:
        return self.root / "item_feature.parquet"

    @property
    def item_images(self) -> Path:
        return self.root / "item_images"

    @property
    def test_truth(self) -> Path:
        """Labels of test rows; written by our dataset builders only, used for local scoring."""
        return self.root / "local_truth" / "test_labels.parquet"


@dataclass(frozen=True)
class RawTencentGR:
    """TencentGR raw input: the platform layout (jsonl + pickles) or the public parquet release."""

    root: Path

    # platform layout
    @property
    def seq(self) -> Path:
        return self.root / "seq.jsonl"

    @property
    def seq_offsets(self) -> Path:
        return self.root / "seq_offsets.pkl"

    @property
    def indexer(self) -> Path:
        return self.root / "indexer.pkl"

    @property
    def item_feat_dict(self) -> Path:
        return self.root / "item_feat_dict.json"

    @property
    def creative_emb(self) -> Path:
        return self.root / "creative_emb"

    @property
    def predict_seq(self) -> Path:
        return self.root / "predict_seq.jsonl"

    @property
    def predict_set(self) -> Path:
        return self.root / "predict_set.jsonl"

    # parquet release
    def parquet_dir(self, name: str) -> Path:  # seq, item_feat, user_feat, candidate, predict_seq, mm_emb
        return self.root / name

    @property
    def is_parquet_layout(self) -> bool:
        """seq/ here, or in a subfolder (the release's training and evaluation folders side by side)."""
        if (self.root / "seq").is_dir():
            return True
        return self.root.is_dir() and any((d / "seq").is_dir() for d in self.root.iterdir() if d.is_dir())

    @property
    def item_text(self) -> Path:
        """creative_id, text: a recstack extension written by the MovieLens builder (real data has none)."""
        return self.root / "item_text.parquet"

    @property
    def truth(self) -> Path:
        """Hidden next item of each predict user; written by our builders only, for local scoring."""
        return self.root / "local_truth" / "predict_truth.parquet"


@dataclass(frozen=True)
class Paths:
    cfg: DictConfig

    @property
    def raw_dir(self) -> Path:
        return Path(self.cfg.data.raw_dir or Path(self.cfg.input_root) / self.cfg.dataset)

    @property
    def eval_dir(self) -> Path | None:
        """The TencentGR parquet release's evaluation folder when given apart from raw_dir (data.eval_dir)."""
        return Path(self.cfg.data.eval_dir) if self.cfg.data.eval_dir else None

    @property
    def raw_mmctr(self) -> RawMmctr:
        return RawMmctr(self.raw_dir)

    @property
    def raw_tencentgr(self) -> RawTencentGR:
        return RawTencentGR(self.raw_dir)

    @property
    def synthetic_fixtures(self) -> Path:
        """Real MicroLens titles and tags for synthetic items (data.synthetic.fixtures_dir)."""
        return from_repo(self.cfg.data.synthetic.fixtures_dir)

    @property
    def cache_dir(self) -> Path:
        """Downloads shared by every dataset (e.g. the recbole wheel holding MovieLens-100K)."""
        return Path(self.cfg.input_root) / "_cache"

    @property
    def embed_cache_dir(self) -> Path:
        """Encoder outputs keyed by (model, settings, item content), shared by every dataset and run."""
        return Path(self.cfg.output_root) / "_cache" / "embed"

    @property
    def data_runs_dir(self) -> Path:
        """Every run folder of this track and data set (one per config)."""
        return Path(self.cfg.output_root) / self.cfg.track / self.cfg.dataset

    @property
    def run_dir(self) -> Path:
        return self.data_runs_dir / self.cfg.run_name

    @property
    def leaderboard(self) -> Path:
        """One row per model stage that really ran (leaderboard.py); `./run.sh leaderboard` prints it."""
        return self.run_dir / "leaderboard.csv"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def resolved_config(self) -> Path:
        return self.run_dir / "config.yaml"

    def stage_dir(self, stage: str) -> Path:
        return self.raw_dir if stage == "build" else self.run_dir / stage

    @property
    def report_page(self) -> Path:
        """One static HTML page of the run (`./run.sh report`): every stage's figures and plots."""
        return self.run_dir / Reports.PAGE

    def resume_dir(self, stage: str) -> Path:
        """Last-epoch checkpoints of a training stage; kept across interruptions, removed on success."""
        return self.run_dir / "_resume" / stage


# ---- files inside stage folders (relative to the stage folder) -------------------------------------
class Prepared:
    """Canonical tables written by `prepare` (mmctr)."""

    ITEMS = "items.parquet"  # item_id, id_index, title, tags, levels, image_path, has_*

    @staticmethod
    def samples(split: str) -> str:  # row_id, user_id, user_index, hist (fixed list), target, ...
        return f"samples_{split}.parquet"

    @staticmethod
    def embedding(name: str) -> str:  # (n_items + 1, d) float32, row == item_id, row 0 padding
        return f"emb_{name}.npy"


class Embedded:
    """Item embeddings written by `embed`."""

    ITEMS = "item_emb.npy"  # (n_items + 1, dim) float32, row == item_id, row 0 padding (zeros)
    MMCTR_ITEM_INFO = "item_info.parquet"  # MMCTR Task 1 export: the challenge layout, item_emb_d128 ours


class Ranked:
    """Per-model files of the rank stages (`rank_din`, `rank_qin`), next to predictions.parquet."""

    METRICS = "metrics.json"  # valid/test AUC, logloss, gAUC; per-fold figures
    CURVE = "curve.csv"  # one row per (fold, epoch): train loss, valid AUC/logloss, lr, samples/s

    @staticmethod
    def checkpoint(fold: int | None) -> str:  # best weights (state_dict); one per fold in OOF mode
        return "model.pt" if fold is None else f"model_fold{fold}.pt"


class Seqrec:
    """Files of the `seqrec` stage besides predictions.parquet (a ranking table: split train = the stacker's
    queries (tgr_prepared.stack_queries order), valid = valid_targets, test = predict_users)."""

    METRICS = "metrics.json"  # valid score, HR@10, NDCG@10, weighted score; best step, samples/s
    CURVE = "curve.csv"  # one row per evaluation: step, train loss, lr, valid figures, samples/s
    MODEL = "model.pt"  # best weights (state_dict)
    RESUME = "seqrec.pt"  # under Paths.resume_dir("seqrec"): the last evaluation's checkpoint


class PreparedTGR:
    """Canonical tables written by `prepare` (tencentgr). Ids are the platform re-ids (from 1; 0 = none)."""

    EVENTS = "events.parquet"  # user int32, item int32, action int8, ts int64; by user, then time
    USERS = "users.parquet"  # user, raw_user_id, u103.. int32 sparse (0 = missing), u106.. list<int32>
    ITEMS = "items.parquet"  # item, creative_id (raw), i100.. int32 sparse features (0 = missing)
    CANDIDATES = "candidates.parquet"  # creative_id, retrieval_id, item (0 = cold: never in training)
    PREDICT_USERS = "predict_users.parquet"  # user, raw_user_id, known, in answer order
    ITEM_TEXT = "item_text.parquet"  # item, text (when the raw data has titles)
    VALID = (
        "valid_targets.parquet"  # held-out last click of sampled training users: user, item, action, n_hist
    )
    PREDICT_EVENTS = "predict_events.parquet"  # the predict users' histories, same columns as EVENTS
    # the stacker's training queries (tgr_prepared.stack_queries: the last data.stack_cuts clicks of up to
    # data.stack_users training users outside the valid users), same columns as VALID plus event_index
    STACK_QUERIES = "stack_queries.parquet"
    # their repeat shares (tgr_prepared.repeat_shares): what `exclude_seen: auto` decides from, in every stage
    SEEN = "seen_shares.json"

    @staticmethod
    def mm_emb(feat: str) -> str:  # (n_items + 1, dim) float16 memmap, row == item re-id
        return f"mm_{feat}.npy"

    @staticmethod
    def mm_mask(feat: str) -> str:  # (n_items + 1,) bool coverage
        return f"mm_{feat}_mask.npy"


class Retrieved:
    """Files of the `retrieve` stage (both tracks)."""

    # tencentgr: merged candidates, one row per (split, user_row, item). split "train" (the stacker's
    # queries, PreparedTGR.STACK_QUERIES), "valid" (prepare's valid_targets) or "test" (predict_users); user_row = the row of
    # the user in that split's query table; user int64 re-id; item int64 re-id; n_sources int8; per source s:
    # f"{s}_score" float32 (NaN where s did not propose the item) and f"{s}_rank" int32 (-1 where not);
    # label float32: on train / valid the metric weight of the held-out target (click 1, conversion 2.5)
    # where item == target, 0 elsewhere; NaN on test.
    CANDIDATES = "candidates.parquet"
    FEATURES = "features.parquet"  # mmctr: split, row_id, one float32 column per retrieval feature
    # tencentgr: the co-visitation matrices (retrieve.covisit settings), fitted once here and read by the stack
    # stage: npz of CSR arrays indptr (items + 1,) int64, nbr int32, weight float32 (covisit.write_matrix)
    COVISIT_BEFORE = "covisit_before.npz"  # on the valid fold (tgr_prepared.fit_events): train, valid queries
    COVISIT_ALL = "covisit_all.npz"  # on the test fold (fit_events "test"): the predict users' queries
    REPORT = "retrieval.json"  # recall@K per source and merged, each source's own top-10 score


class Stacked:
    """Files of the `stack` stage, next to predictions.parquet."""

    IMPORTANCE = "importance.json"  # LightGBM gain importance (mean over folds) and per-fold figures


class Predictions:
    """Every model's predictions: keyed by (split, row_id), one `pred` per row."""

    FILE = "predictions.parquet"


class Ensembled:
    """Files of the `ensemble` stage beside predictions.parquet (the submitted ranking) and the submission."""

    # tencentgr: every candidate's valid and test top-10 (the sources and the blend; split = "<name>/<split>"),
    # so the local test of the candidates not submitted can be shown beside their valid score
    RANKINGS = "candidate_rankings.parquet"


class Submission:
    MMCTR_CSV = "prediction.csv"
    MMCTR_ZIP = "prediction.zip"
    TGR_JSON = "submission.json"  # {"top10s": [[creative_id x 10], ...], "user_list": [raw user id, ...]}
    TGR_CSV = "submission.csv"  # user_id,item_ids (space-separated creative ids) for humans


class Reports:
    """Plots and pages for humans: PNGs under a stage's `reports/` folder, one HTML page per run folder."""

    DIR = "reports"  # inside a stage folder
    LEARNING_CURVE = "learning_curve.png"  # rank stages: train loss and valid AUC per epoch (per fold)
    RECALL = "recall_at_k.png"  # retrieve: recall@K per source (drawn by the report when absent)
    PAGE = "report.html"  # in the run folder
