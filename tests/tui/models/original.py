"""Model script: the research original of the tiny GPT."""

from tiny_models import INPUT_IDS, make_original


def build():
    return make_original(), INPUT_IDS.clone()
