"""Fixtures for the data tests: a hand-made Speech Commands directory and a tiny synthesized data set."""

import pytest

from tests.data.layout import make_layout


@pytest.fixture
def hand_root(tmp_path):
    return make_layout(tmp_path / "sc")


@pytest.fixture(scope="session")
def numpy_root(tmp_path_factory):
    """Tiny numpy-engine data set: 14 words x 5 speakers x 2 clips."""
    from tfx_ext.apps.synthesis import synthesize_keywords

    root = tmp_path_factory.mktemp("numpy_kws")
    summary = synthesize_keywords(root, speakers=5, clips_per_speaker=2, engine="numpy", progress=False)
    return str(root), summary
