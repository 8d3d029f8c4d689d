"""The `tf` fixture: CI installs tensorflow-cpu; without it the Magenta tests FAIL, never skip."""
import os

import pytest


@pytest.fixture(scope="session")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow
    except ImportError as e:
        pytest.fail(f"these tests need TensorFlow to write real checkpoints: pip install tensorflow-cpu ({e})")
    return tensorflow
