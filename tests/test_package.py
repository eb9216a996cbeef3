"""The package as users meet it: a light import, the command line, the README."""

import os
import re
import subprocess
import sys

import pytest

import kzoo
from kzoo import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_kzoo_does_not_import_the_heavy_optional_stacks():
    code = (
        "import sys, kzoo; heavy = ['tensorflow_model_optimization', 'tf_keras', "
        "'tensorflow_datasets', 'ai_edge_litert']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_kzoo_list_prints_matching_models_and_their_weights(capsys):
    assert cli.main(["list", "resnet5*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["resnet50", "resnet50_v2", "resnet56"]
    assert "imagenet" in lines[0] and "weights: -" in lines[2]


def test_kzoo_list_details_adds_parameters(capsys):
    assert cli.main(["list", "lenet5", "--details"]) == 0
    assert "61,706" in capsys.readouterr().out


def test_kzoo_list_without_a_match_fails(capsys):
    assert cli.main(["list", "mobilenet*"]) == 1
    assert "no model matches 'mobilenet*'" in capsys.readouterr().err


def test_kzoo_info_prints_model_info_and_summary(capsys):
    assert cli.main(["info", "lenet5", "--summary"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"params\s+61706", out)
    assert "conv1" in out and "Total params" in out


def test_kzoo_info_unknown_model_exits_2_with_a_suggestion(capsys):
    assert cli.main(["info", "alexnt"]) == 2
    assert "Did you mean 'alexnet'" in capsys.readouterr().err


def test_python_dash_m_kzoo_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "kzoo", "list", "vgg19*"], capture_output=True, text=True, check=True
    )
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["vgg19", "vgg19_bn"]


def test_readme_model_table_is_the_generated_one():
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("<!-- models:start -->") + len("<!-- models:start -->")
    end = readme.index("<!-- models:end -->")
    assert readme[start:end].strip() == cli.markdown_table(kzoo.list_models()), (
        "README's model table is stale: regenerate it with `kzoo list --markdown`."
    )


def _readme_code(language):
    readme = open(os.path.join(ROOT, "README.md")).read()
    return re.findall(rf"```{language}\n(.*?)```", readme, re.S)


def test_readme_python_example_runs():
    blocks = _readme_code("python")
    assert blocks
    exec(compile(blocks[0], "README.md", "exec"), {})


@pytest.mark.parametrize("command", ["kzoo list", "kzoo info resnet50", "python -m kzoo list vgg*"])
def test_readme_mentions_the_commands_that_work(command):
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert command in readme
