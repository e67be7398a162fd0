import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from refers_lite.data.reports.corpus import ReportCorpus  # noqa: E402
from refers_lite.data.reports.side_swap import swap_sides  # noqa: E402
from refers_lite.data.reports.report_figures import (cleaning_examples, plot_label_frequencies, plot_token_lengths,  # noqa: E402
                                             plot_views_per_study)


@pytest.fixture(scope="module")
def corpus():
    return ReportCorpus.from_iu(require_images=False)


def test_token_length_histogram_counts_every_report(corpus):
    fig = plot_token_lengths(corpus)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == len(corpus) == 3927
    assert [t.get_text().split(" = ")[0] for t in ax.get_legend().get_texts()] == ["p50", "p90", "p99"]


def test_label_frequencies_and_views(corpus):
    fig = plot_label_frequencies(corpus.kept)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1] == "normal" and "cardiomegaly" in labels
    fig = plot_views_per_study(corpus)
    a1, a2 = fig.axes[:2]
    assert sum(p.get_height() for p in a1.patches) == len(corpus)
    assert sum(p.get_height() for p in a2.patches) == sum(len(r.record.images) for r in corpus.kept)


def test_cleaning_and_swap_examples(corpus):
    rows, attribution = cleaning_examples(corpus, n=3)
    assert len(rows) == 3 and "CC BY-NC-ND 4.0" in attribution
    for r in rows:
        assert "XXXX" in r["raw"] and "[ANON]" in r["cleaned"] and "XXXX" not in r["cleaned"]
        assert r["swapped"] != r["cleaned"]
        assert swap_sides(r["swapped"]) == r["cleaned"]
        words, swapped = r["cleaned"].split(), r["swapped"].split()
        assert words.count("left") == swapped.count("right") and words.count("right") == swapped.count("left")
    assert cleaning_examples(corpus, n=3) == (rows, attribution)  # seeded
    with pytest.raises(ValueError, match="no report"):
        cleaning_examples(ReportCorpus.from_records([]), n=1)
