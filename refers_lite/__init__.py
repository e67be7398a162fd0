"""refers_lite: REFERS (Zhou et al., 2022), taught and reproduced.

Cross-supervised pre-training of a radiograph transformer from free-text radiology reports:
view fusion over a study's radiographs, report generation (Eq. 1) and study-report
consistency (Eq. 2), then fine-tuning on small labelled datasets.
"""
__version__ = "0.1.0"

# The one place the repository's address is written: the book's _config.yml (repository.url) and every
# chapter's Colab install cell must say the same (tests/test_notebook_helpers.py checks both).
REPOSITORY_URL = "https://github.com/refers-lite/refers_lite"

from .config import Config, ConfigError, get_config  # noqa: E402

__all__ = ["Config", "ConfigError", "get_config", "REPOSITORY_URL", "__version__"]
