"""The synthetic Ark-6 datasets model Ark's premise: the providers share the same underlying findings
under their own label names, each with its own annotation habits and label noise, each drawn under its
own acquisition look that does not depend on the labels.

The fixture writes the six datasets while recording, for every written image, the labels that are true
(what the generator drew the image from), the findings drawn (and whether they left a visible mark) and
the acquisition site; the tests compare that with what the written files say (read by the adapters, as
training reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arkx.data.adapters import read_dataset
from arkx.synth import providers, synthesize
from arkx.synth.anatomy import Site
from arkx.synth.providers import LABEL_CONCEPTS, PREVALENCE, SITES, nih14, vindr_cxr

N, SIZE = 150, 32
ARK6 = ("chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen", "mimic_cxr")
SAVER = {"chexpert": "save_gray", "mimic_cxr": "save_gray", "nih14": "save_gray", "shenzhen": "save_gray",
         "rsna": "_rsna_dicom", "vindr_cxr": "_vindr_dicom"}
OPTIONS = {"vindr_cxr": {"labels": "all28"}}

#: one underlying finding, each provider's own name for it (the vocabulary the premise is about)
SHARED = {
    "effusion": {"nih14": "Effusion", "chexpert": "Pleural Effusion", "mimic_cxr": "Pleural Effusion",
                 "vindr_cxr": "Pleural effusion"},
    "opacity": {"nih14": "Infiltration", "chexpert": "Lung Opacity", "mimic_cxr": "Lung Opacity",
                "vindr_cxr": "Lung Opacity", "rsna": "Lung Opacity"},
    "cardiomegaly": {"nih14": "Cardiomegaly", "chexpert": "Cardiomegaly", "mimic_cxr": "Cardiomegaly",
                     "vindr_cxr": "Cardiomegaly"},
    "atelectasis": {"nih14": "Atelectasis", "chexpert": "Atelectasis", "vindr_cxr": "Atelectasis"},
    "pneumothorax": {"nih14": "Pneumothorax", "chexpert": "Pneumothorax", "vindr_cxr": "Pneumothorax"},
    "pleural_thickening": {"nih14": "Pleural_Thickening", "chexpert": "Pleural Other",
                           "vindr_cxr": "Pleural thickening"},
    "fibrosis": {"nih14": "Fibrosis", "vindr_cxr": "Pulmonary fibrosis"},
    "emphysema": {"nih14": "Emphysema", "vindr_cxr": "COPD"},
    "tuberculosis": {"shenzhen": "Tuberculosis", "vindr_cxr": "Tuberculosis"},
}


@dataclass
class Written:
    """One written image: the labels true for it, the concepts drawn visibly, the site it was drawn under."""

    truth: frozenset
    concepts: frozenset
    site: Site


def _instrument(mp: pytest.MonkeyPatch, name: str, log: dict[str, Written]) -> None:
    """Record, per written file, the truth the image was drawn from (without changing any draw)."""
    mod = getattr(providers, name)
    state: dict = {"truth": frozenset()}

    def findings_for(rng, positives, table):
        out = mod_findings_for(rng, positives, table)
        state["truth"] = frozenset(label for label, _ in positives)
        return out

    def draw_case(case, shape, site=None):
        drawn = mod_draw_case(case, shape, site)
        state["concepts"] = frozenset(f.concept for i, f in enumerate(case.findings)
                                      if f.strength > 0 and drawn.components.get(i))
        state["site"] = site
        return drawn

    def saver(*args, **kwargs):
        log[str(Path(args[0]).resolve())] = Written(state["truth"], state["concepts"], state["site"])
        return mod_saver(*args, **kwargs)

    mod_draw_case, mod_saver = mod.draw_case, getattr(mod, SAVER[name])
    mod_findings_for = getattr(mod, "findings_for", None)
    mp.setattr(mod, "draw_case", draw_case)
    mp.setattr(mod, SAVER[name], saver)
    if mod_findings_for is not None:
        mp.setattr(mod, "findings_for", findings_for)


@pytest.fixture(scope="module")
def ark6(tmp_path_factory):
    out = tmp_path_factory.mktemp("premise")
    log: dict[str, Written] = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ARK6:
            _instrument(mp, name, log)
        roots = synthesize(out, seed=0, n=N, size=SIZE)
    return out, roots, log, {}


def _records(ark6, name):
    """The adapter's records of ``name`` and, per record row, what was written (read once per module)."""
    out, roots, log, cache = ark6
    if name in cache:
        return cache[name]
    options = dict(OPTIONS.get(name, {}))
    if name == "mimic_cxr":
        options["patients_file"] = str(out / "mimic_cxr/mimic-iv/hosp/patients.csv.gz")
    rec = read_dataset(name, roots[name], **options)
    written = [log[str((rec.root / p).resolve())] for p in rec.images["path"]]
    cache[name] = rec, written
    return rec, written


# ------------------------------------------------------------------------------- shared findings


def test_one_finding_is_labelled_with_each_providers_own_name(ark6):
    """The images a provider labels positive under its own name show the shared finding; the ones it labels
    negative mostly do not."""
    bad = {}
    for concept, names in SHARED.items():
        for provider, label in names.items():
            rec, written = _records(ark6, provider)
            y = rec.labels[:, rec.task.label_names.index(label)]
            shows = np.array([concept in w.concepts for w in written])
            pos, neg = shows[y == 1].mean(), shows[y == 0].mean()
            if not (pos >= 0.8 and pos > 3 * neg):
                bad[(concept, provider, label)] = (round(float(pos), 2), round(float(neg), 2))
    assert not bad, f"label does not carry its finding (P(shows | pos), P(shows | neg)): {bad}"
    # and the names really differ: a model cannot merge the datasets by label name
    assert len(set(SHARED["effusion"].values())) >= 3
    assert len(set(SHARED["opacity"].values())) >= 2


def test_shared_findings_are_common_enough_in_every_provider_that_has_them(ark6):
    """Something to transfer: every shared finding is visible in >= 3 % of each of its providers' images."""
    rare = {}
    for concept, names in SHARED.items():
        for provider in names:
            _, written = _records(ark6, provider)
            rate = np.mean([concept in w.concepts for w in written])
            if rate < 0.03:
                rare[(concept, provider)] = round(float(rate), 3)
    assert not rare, rare
    # every Ark-6 dataset shares at least one finding with another one
    sharing = {p for names in SHARED.values() if len(names) > 1 for p in names}
    assert sharing == set(ARK6)


def test_acquisition_look_is_per_provider_never_per_label(ark6):
    """One site per provider whatever the labels (no label is readable from a provider artefact), and the
    six sites differ."""
    for name in ARK6:
        _, written = _records(ark6, name)
        assert {w.site for w in written} == {SITES[name]}, name
    looks = {(s.gamma, s.contrast, s.offset, s.noise, s.blur, s.border, s.border_top, s.marker)
             for n, s in SITES.items() if n in ARK6}
    assert len(looks) == len(ARK6)


# ------------------------------------------------------------------------------- annotation habits


def _nih_truth_and_written(ark6):
    rec, written = _records(ark6, "nih14")
    names = rec.task.label_names
    truth = np.array([[lab in w.truth for lab in names] for w in written])
    return truth, rec.labels == 1


def test_nih_labels_are_text_mined_with_misses_and_false_mentions(ark6):
    truth, said = _nih_truth_and_written(ark6)
    missed = (truth & ~said).sum() / truth.sum()
    false = (~truth & said).sum() / (~truth).sum()
    assert 0.05 <= missed <= 0.16, missed  # about one present finding in ten not recorded
    assert 0.0015 <= false <= 0.01, false  # about one absent finding in two hundred recorded
    # a missed finding is still in the image: the label, not the drawing, is wrong
    rec, written = _records(ark6, "nih14")
    j = rec.task.label_names.index("Effusion")
    miss = truth[:, j] & ~said[:, j]
    assert all("effusion" in written[i].concepts for i in np.flatnonzero(miss))


def test_vindr_majority_vote_misses_some_findings_and_test_is_the_truth(ark6):
    rec, written = _records(ark6, "vindr_cxr")
    names = rec.task.label_names[:-1]  # without "No finding"
    truth = np.array([[lab in w.truth for lab in names] for w in written])
    said = rec.labels[:, : len(names)] == 1
    train, test = (rec.images["split"] != "test").to_numpy(), (rec.images["split"] == "test").to_numpy()
    missed = (truth & ~said)[train].sum() / truth[train].sum()
    assert 0.02 <= missed <= 0.15, missed  # ~ 3 p^2 with p ~ 0.1-0.33 per reader
    assert not (~truth & said).any()  # readers never mark an absent finding
    assert (said[test] == truth[test]).all()  # the consensus test labels are the truth


def test_chexpert_labeler_habits(ark6):
    """CheXpert's report labeler: a true finding is positive, uncertain or not mentioned; an absent one
    negative, uncertain or not mentioned; the radiologists' validation labels (our test split) are the truth."""
    rec, written = _records(ark6, "chexpert")
    names = [n for n in rec.task.label_names if n != "No Finding"]
    cols = [rec.task.label_names.index(n) for n in names]
    y = rec.labels[:, cols]
    truth = np.array([[lab in w.truth for lab in names] for w in written])
    labelled = (rec.images["split"] != "test").to_numpy()
    yt, tt = y[labelled], truth[labelled]
    unc_pos = (yt[tt] == -1).mean()
    blank_pos = np.isnan(yt[tt]).mean()
    unc_neg = (yt[~tt] == -1).mean()
    assert 0.08 <= unc_pos <= 0.25 and 0.04 <= blank_pos <= 0.2 and 0.02 <= unc_neg <= 0.1, (unc_pos, blank_pos,
                                                                                              unc_neg)
    assert not (yt[tt] == 0).any() and not (yt[~tt] == 1).any()
    test = ~labelled
    assert (y[test] == truth[test]).all()


# ------------------------------------------------------------------------------- noise leaves images alone


def _pixels(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): np.asarray(Image.open(p)).tobytes() for p in sorted(root.rglob("*.png"))}


def test_label_noise_has_its_own_stream_so_images_do_not_move(tmp_path, monkeypatch):
    """Modelling label noise must not change a single pixel: the images are those drawn from the truth."""
    synthesize(tmp_path / "noisy", seed=3, n=40, size=32, datasets=["nih14", "vindr_cxr"])
    monkeypatch.setattr(nih14, "P_MISSED", 0.0)
    monkeypatch.setattr(nih14, "P_FALSE_MENTION", 0.0)
    monkeypatch.setattr(vindr_cxr, "reader_misses", lambda rng, T, train, *a, **k: np.zeros((*T.shape[:1], 3,
                                                                                            T.shape[1]), bool))
    synthesize(tmp_path / "clean", seed=3, n=40, size=32, datasets=["nih14", "vindr_cxr"])
    noisy, clean = _pixels(tmp_path / "noisy" / "nih14"), _pixels(tmp_path / "clean" / "nih14")
    assert len(noisy) == 40 and noisy == clean
    dicoms = lambda d: {p.name: p.read_bytes() for p in (tmp_path / d / "vindr_cxr").rglob("*.dicom")}
    assert dicoms("noisy") == dicoms("clean")
    text = lambda d: (tmp_path / d / "nih14" / "Data_Entry_2017_v2020.csv").read_text()
    assert text("noisy") != text("clean")


def test_prevalence_tables_name_shared_findings():
    """The static tables agree with :data:`SHARED`: each name maps to its concept, prevalences are set."""
    for concept, names in SHARED.items():
        for provider, label in names.items():
            if provider in LABEL_CONCEPTS and label in LABEL_CONCEPTS[provider]:
                assert concept in LABEL_CONCEPTS[provider][label], (provider, label)
                if provider in PREVALENCE:
                    assert PREVALENCE[provider][label] >= 0.05


# ------------------------------------------------------------------------------- something transfers


def _pixels_and_labels(ark6, name: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Standardised 16 x 16 pixels and 0/1 labels of the images of ``name`` labelled 0 or 1 for ``label``."""
    from arkx.data.io import read_image

    rec, _ = _records(ark6, name)
    y = rec.labels[:, rec.task.label_names.index(label)]
    keep = np.isin(y, (0.0, 1.0))
    rows = []
    for path in rec.images["path"][keep]:
        a = np.asarray(read_image(rec.root / path), dtype=np.float32)
        a = np.asarray(Image.fromarray((255 * a / max(float(a.max()), 1e-6)).astype(np.uint8)).resize((16, 16)),
                       dtype=np.float32).ravel()
        rows.append((a - a.mean()) / (a.std() + 1e-6))
    return np.array(rows), y[keep]


def test_a_probe_of_one_providers_label_finds_the_same_finding_in_another_provider(ark6):
    """Transfer, model-free: a linear probe on the pixels of NIH's "Effusion" ranks CheXpert's "Pleural
    Effusion" images well (the same drawing under another acquisition look), and an unrelated label not."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    X, y = _pixels_and_labels(ark6, "nih14", "Effusion")
    probe = LogisticRegression(C=0.05, max_iter=2000).fit(X, y)
    auc = {}
    for label in ("Pleural Effusion", "Support Devices"):
        Xt, yt = _pixels_and_labels(ark6, "chexpert", label)
        auc[label] = roc_auc_score(yt, probe.decision_function(Xt))
    assert auc["Pleural Effusion"] > 0.75 and auc["Support Devices"] < 0.65, auc
