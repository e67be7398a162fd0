import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from refers_lite.config import get_config  # noqa: E402
from refers_lite.data.loading.studies import MultiViewStudies, StudyCollator  # noqa: E402
from refers_lite.data.loading.toy import build_toy_datasets  # noqa: E402
from refers_lite.models.text_encoder import load_text_tokenizer  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def smoke_cfg():
    return get_config("smoke")


@pytest.fixture(scope="session")
def text_tokenizer():
    return load_text_tokenizer("minilm")


@pytest.fixture(scope="session")
def toy():
    cfg = get_config("smoke")
    return build_toy_datasets(cfg)


@pytest.fixture
def batch(toy, text_tokenizer, smoke_cfg):
    """A real collated batch of 4 smoke-sized toy studies."""
    train, _, _ = toy
    ds = MultiViewStudies(train, smoke_cfg.model.num_views)
    return StudyCollator.from_config(smoke_cfg, text_tokenizer)([ds[i] for i in range(4)])


def model_inputs(batch):
    return {k: batch[k] for k in ("images", "view_mask", "report_ids", "text_ids", "text_mask")}
