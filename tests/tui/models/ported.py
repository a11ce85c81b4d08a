"""Model script: the port of the tiny GPT, with its weights converted from the original."""

from tiny_models import INPUT_IDS, convert, make_original


def build():
    return convert(make_original()), INPUT_IDS.clone()
