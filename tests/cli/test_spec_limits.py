"""Bounded parsing: a small YAML spec of nested aliases is refused at once, and messages quote values in short."""

import resource
import subprocess
import sys

import pytest

from emvi.config import config_from_dict
from emvi.errors import ConfigError, short_repr
from emvi.inference import TrainConfig
from emvi.spec import read_spec_file

BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
                 + ["model: {name: vae, latent_dim: *i}"])


def test_a_nested_alias_bomb_is_refused_in_one_line_without_expanding(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 600
    with pytest.raises(ConfigError, match="expands to more than") as caught:
        read_spec_file(path)
    assert "\n" not in str(caught.value)


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("model: &m {name: vae, inner: *m}\n")
    with pytest.raises(ConfigError, match="contains itself"):
        read_spec_file(path)


@pytest.mark.slow
def test_the_cli_answers_the_bomb_in_one_line_with_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    code = "import sys; from emvi.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "fit", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "expands to more than" in out.stderr
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 2 * 2**20  # KiB: under 2 GiB


def test_a_huge_value_is_quoted_in_at_most_200_characters():
    nested = [[list(range(1000))] * 1000] * 1000  # a billion numbers if it were expanded
    text = short_repr(nested)
    assert len(text) <= 200 and "\n" not in text
    with pytest.raises(ConfigError) as caught:
        config_from_dict(TrainConfig, {"epochs": nested})
    assert len(str(caught.value)) < 400
