"""Verify: how closely an artifact reproduces the original, sample by sample.

Rules:
1. Each output of each evaluation sample is flattened and compared with the original's.
2. Cosine similarity is defined for sparse outputs too: two all-zero outputs agree (1.0); exactly one
   all-zero output disagrees (0.0). No NaN ever reaches a report.
3. Figures: cosine min and mean over every output of every sample, max absolute error, signal-to-
   quantisation-noise ratio (dB, capped at 200 when the outputs are identical), and top-1 agreement
   when the first output is a classifier's logits.
4. With an attention mask (text padded to a static length), a token-level output (leading dims equal
   to the mask's) is compared on the real tokens only: padded positions carry no meaning, and their
   values differ between runtimes without changing any result a user reads.
5. Task figures (accuracy, macro-F1, top-5 and retrieval agreement) come from `metrics.py` and are
   carried here, so report.json holds every figure of an artifact under its `accuracy`.
6. Each output also gets its kind and its kind's figures (stages/outputs.py). The `cosine_min` that gates
   is taken over the outputs cosine means something for: every sample of a dense output, the series of a
   scalar one; not a probability or a probability map (their decision agreement and IoU say more). A model
   with none of those keeps the minimum over all its outputs, reported beside the figures that gate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..runtimes import Feed, Session
from . import outputs

_EPS = 1e-12
SNR_CAP_DB = 200.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return 0.0  # a non-finite output agrees with nothing
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    if scale > 0:  # scale first: squares of huge values overflow float64
        a, b = a / scale, b / scale
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < _EPS and nb < _EPS:
        return 1.0
    if na < _EPS or nb < _EPS:
        return 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    diff = reference.astype(np.float64) - candidate.astype(np.float64)
    return _snr_from_sums(float(np.sum(reference.astype(np.float64) ** 2)), float(np.sum(diff ** 2)))


# The task figures a `metrics.TaskMetrics` hands to a `Fidelity` as they are (`Fidelity.add_task`).
CARRIED_FIGURES = ("top5_agreement", "retrieval_agreement_at_5", "retrieval_k", "decision_agreement", "map_iou",
                   "box_agreement", "boxes", "mask_miou", "masks", "transcripts", "depth_agreement", "depth", "token_agreement",
                   "generation")


@dataclass
class Fidelity:
    cosine_min: float
    cosine_mean: float
    max_abs_error: float
    snr_db: float
    samples: int
    top1_agreement: float | None = None
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    top5_agreement: float | None = None
    retrieval_agreement_at_5: float | None = None
    retrieval_k: int | None = None  # below 5 only for tiny evaluation sets
    decision_agreement: float | None = None  # probability outputs (stages/outputs.py)
    map_iou: float | None = None  # probability-map outputs
    box_agreement: float | None = None  # detectors: F1 of matched boxes (tasks/detection.py)
    boxes: dict[str, float] | None = None  # detectors: recall, precision, matched IoU, counts
    mask_miou: float | None = None  # segmenters: mean IoU of the masks (tasks/segmentation.py)
    masks: dict[str, float] | None = None  # segmenters: pixel agreement, classes
    transcripts: dict[str, float] | None = None  # CTC speech recognition: token error rate of the greedy transcripts
    depth_agreement: float | None = None  # depth estimators: pixels within 1.25x of the original's depth (tasks/depth.py)
    depth: dict[str, float] | None = None  # depth estimators: mean relative error, pixels with depth
    token_agreement: float | None = None  # generative models: next-token top-1 agreement (tasks/generation.py)
    generation: dict[str, float] | None = None  # generative models: perplexity, KL, greedy continuation agreement
    task_metrics: dict[str, dict[str, float]] | None = None  # metric -> original, artifact, drop, relative
    labelled_samples: int | None = None
    intervals: dict[str, list[float]] | None = None  # agreement metric -> its 95% interval

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def add_task(self, task) -> None:
        """Carry the task figures of a `metrics.TaskMetrics` (its top-1 agreement where the family measures it: per
        token for a per-token model)."""
        if task.top1_agreement is not None:
            self.top1_agreement = task.top1_agreement
        for name in CARRIED_FIGURES:
            setattr(self, name, getattr(task, name))
        self.task_metrics = task.task_metrics or None
        self.labelled_samples = task.labelled_samples
        self.intervals = dict(task.intervals) or None


def unpadded(output: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The positions of a token-level output that hold real tokens (rule 4)."""
    if mask is None or mask.ndim != 2 or output.ndim < 2 or output.shape[:2] != mask.shape or mask.all():
        return output
    return output[mask.astype(bool)]


def compare(references: list[list[np.ndarray]], candidates: list[list[np.ndarray]], output_names: list[str],
            classifier: bool, masks: list[np.ndarray | None] | None = None) -> Fidelity:
    per_output: dict[str, dict[str, list[float]]] = {n: {"cos": [], "err": [], "sig": [], "noise": []} for n in output_names}
    agree = []
    for index, (ref, got) in enumerate(zip(references, candidates)):
        mask = masks[index] if masks else None
        for name, r, g in zip(output_names, ref, got):
            r, g = unpadded(r, mask), unpadded(g, mask)
            stats = per_output[name]
            stats["cos"].append(cosine(r, g))
            diff = np.abs(r.astype(np.float64) - g.astype(np.float64))
            stats["err"].append(float(np.max(diff)) if diff.size and np.all(np.isfinite(diff)) else (0.0 if not diff.size else float("inf")))
            stats["sig"].append(float(np.sum(r.astype(np.float64) ** 2)))
            stats["noise"].append(float(np.sum(diff ** 2)))
        if classifier:
            agree.append(float(np.argmax(ref[0].reshape(-1)) == np.argmax(got[0].reshape(-1))))
    summary = {}
    all_cos, gating, errs, snrs = [], [], [], []
    for index, (name, s) in enumerate(per_output.items()):
        snr = _snr_from_sums(sum(s["sig"]), sum(s["noise"]))
        summary[name] = {"cosine_min": min(s["cos"]), "cosine_mean": float(np.mean(s["cos"])),
                         "max_abs_error": _finite(max(s["err"])), "snr_db": snr,
                         **outputs.figures(outputs.columns(references, index), outputs.columns(candidates, index))}
        all_cos += s["cos"]
        gating += _gating_cosines(summary[name], s["cos"])
        errs.append(max(s["err"]))
        snrs.append(snr)
    return Fidelity(
        cosine_min=min(gating or all_cos),
        cosine_mean=float(np.mean(all_cos)),
        max_abs_error=_finite(max(errs)),
        snr_db=min(snrs),
        samples=len(references),
        top1_agreement=float(np.mean(agree)) if classifier and agree else None,
        per_output=summary,
    )


def _gating_cosines(entry: dict, per_sample: list[float]) -> list[float]:
    """Rule 6: the cosines that gate: a dense output's per sample, a scalar's over its series, a probability's none."""
    if entry["kind"] == outputs.DENSE:
        return per_sample
    return [entry["series_cosine"]] if entry["kind"] == outputs.SCALAR else []


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e308


def _snr_from_sums(signal: float, noise: float) -> float:
    if not math.isfinite(noise):
        return -SNR_CAP_DB
    if noise <= _EPS * max(signal, _EPS):
        return SNR_CAP_DB
    if signal < _EPS:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, 10.0 * math.log10(signal / noise)))


def run_all(session: Session, feeds: list[Feed]) -> list[list[np.ndarray]]:
    return [session.run(feed) for feed in feeds]


def run_ordered(session: Session, feeds: list[Feed], output_names: list[str]) -> list[list[np.ndarray]]:
    """The session's outputs for each feed, in the order of `output_names` (the original's)."""
    candidate = run_all(session, feeds)
    by_name = dict(zip(session.output_names, range(len(session.output_names))))
    return [[outs[by_name[n]] if n in by_name else outs[i] for i, n in enumerate(output_names)] for outs in candidate]


def run_free(session: Session, feeds: list[Feed], output_names: list[str], pairs: list[tuple[str, str]],
             steps: int) -> list[list[np.ndarray]]:
    """As `run_ordered`, for feeds that are sequences of `steps` calls of a stateful model (prepare rule 6): each
    sequence starts from its first feed's state, and every later call takes the state this session put out the
    call before (as a device runs it), not the one in its feed."""
    out: list[list[np.ndarray]] = []
    by_name = dict(zip(session.output_names, range(len(session.output_names))))
    for start in range(0, len(feeds), steps):
        state: dict[str, np.ndarray] = {}
        for feed in feeds[start:start + steps]:
            outs = session.run({**feed, **state})
            out.append([outs[by_name[n]] if n in by_name else outs[i] for i, n in enumerate(output_names)])
            state = {i: np.asarray(outs[by_name.get(o, output_names.index(o))], dtype=feed[i].dtype).reshape(feed[i].shape)
                     for i, o in pairs}
    return out


def verify(reference_outputs: list[list[np.ndarray]], session: Session, feeds: list[Feed], output_names: list[str],
           classifier: bool) -> Fidelity:
    return compare(reference_outputs, run_ordered(session, feeds, output_names), output_names, classifier)
