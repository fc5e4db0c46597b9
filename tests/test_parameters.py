"""The PHIL parser and the dials.integrate parameter tree."""

from __future__ import annotations

import re

import pytest

from braggint.cli.integrate import master_parameters
from braggint.errors import ParameterError
from braggint.params import Auto, ParameterSet, parse
from braggint.params.convert import convert

from .conftest import SHARED_DATA

REFERENCE = SHARED_DATA.parent / "reference" / "dials_integrate_parameters.md"


def reference_definitions() -> dict[str, str]:
    """Full path -> default words of every parameter in the reference document."""
    if not REFERENCE.exists():
        pytest.skip(f"reference document not found at {REFERENCE}")
    text = REFERENCE.read_text()
    block = text.split("## Full parameter definitions")[1].split("```")[1]
    return {d.path: d.words for d in parse(block, str(REFERENCE)).definitions()}


def test_every_reference_parameter_exists_with_its_default():
    reference = reference_definitions()
    params = master_parameters()
    assert len(reference) > 90
    # braggint may offer more choices than DIALS (mp.method=slurm); never fewer, never another default.
    extended = {"integration.mp.method": "slurm"}
    for path, words in reference.items():
        definition = params.resolve(path)
        assert definition.path == path
        assert definition.words == (f"{words} {extended[path]}" if path in extended else words)
    shown = params.show(expert_level=3)
    # Every parameter of the document appears in the -c -e 3 listing with its default.
    for path, words in reference.items():
        name = path.rsplit(".", 1)[-1]
        words = f"{words} {extended[path]}" if path in extended else words
        assert re.search(rf"^\s*{re.escape(name)} = {re.escape(words)}$", shown, re.M), path


def test_expert_level_hides_and_shows():
    params = master_parameters()
    assert "reflections_per_degree" not in params.show(expert_level=0)
    assert "reflections_per_degree" in params.show(expert_level=1)


def test_defaults_extract_to_typed_values():
    p = master_parameters().extract()
    assert p.integration.mp.nproc == 1 and p.integration.mp.method == "multiprocessing"
    assert p.integration.block.size is Auto and p.integration.block.units == "degrees"
    assert p.integration.block.max_memory_usage == 0.90
    assert p.integration.background.algorithm == "Auto"
    assert p.profile.gaussian_rs.sigma_m_algorithm == "extended"
    assert p.profile.gaussian_rs.parameters.sigma_b is None
    assert p.scan_range == [] and p.absorption_correction == []
    assert p.absorption_correction == [] and p.output.reflections == "integrated.refl"
    assert p.integration.summation.detector_gain == 1.0


def test_abbreviated_names_and_values():
    params = master_parameters()
    params.assign("nproc", "4")
    params.assign("fitting", "False")
    params.assign("background.algorithm", "glm")
    params.assign("nproc", "Auto")  # later assignment wins
    params.assign("scan_range", "1,5")
    params.assign("scan_range", "7 9")
    params.assign("block.units", "*frames")
    p = params.extract()
    assert p.integration.mp.nproc is Auto
    assert p.integration.profile.fitting is False
    assert p.integration.background.algorithm == "glm"
    assert p.scan_range == [[1, 5], [7, 9]]
    assert p.integration.block.units == "frames"


@pytest.mark.parametrize("name, value, message", [
    ("bogus", "1", "unknown parameter 'bogus'"),
    ("npoc", "2", "did you mean integration.mp.nproc"),
    ("min_pixels", "3", "ambiguous parameter 'min_pixels' matches"),
    ("nproc", "two", "parameter integration.mp.nproc: 'two' is not an integer"),
    ("nproc", "0", "parameter integration.mp.nproc: 0 is below the minimum 1"),
    ("block.threshold", "1.5", "integration.block.threshold: 1.5 is above the maximum 1"),
    ("fitting", "maybe", "'maybe' is not True or False"),
    ("background.algorithm", "fancy", "'fancy' is not one of Auto, glm, gmodel, median, null, simple"),
    ("scan_range", "1,2,3", "scan_range: expected 2 values, got 3"),
    ("parameters.n_sigma", "nan", "'nan' is not a finite number"),
])
def test_bad_parameters_name_the_parameter(name, value, message):
    with pytest.raises(ParameterError) as error:
        master_parameters().assign(name, value)
    assert message in str(error.value)


def test_phil_file_with_multiple_scopes_and_comments():
    params = master_parameters()
    params.apply_phil(
        """
        # a comment
        integration { mp { njobs = 2 } background.simple.outlier.algorithm = tukey }
        absorption_correction {
          apply = True
          algorithm = fuller_kapton
        }
        absorption_correction { algorithm = other }
        output.report = "my report.json"
        """, "user.phil")
    p = params.extract()
    assert p.integration.mp.njobs == 2
    assert p.integration.background.simple.outlier.algorithm == "tukey"
    assert [(a.apply, a.algorithm) for a in p.absorption_correction] == [(True, "fuller_kapton"), (False, "other")]
    assert p.absorption_correction[0].fuller_kapton.kapton_thickness_mm.value == 0.05
    assert p.output.report == "my report.json"


def test_diff_reapplied_gives_the_same_parameters():
    params = master_parameters()
    for name, value in [("nproc", "3"), ("fitting", "False"), ("scan_range", "0,4"), ("report", "x y.json"),
                        ("sigma_m_algorithm", "basic"), ("absorption_correction.apply", "True")]:
        params.assign(name, value)
    diff = params.diff()
    assert "nproc = 3" in diff and "threshold" not in diff
    again = master_parameters()
    again.apply_phil(diff, "diff.phil")
    assert again.extract() == params.extract()


@pytest.mark.parametrize("text, message", [
    ("a {\n b = 1\n", "scope 'a' is not closed"),
    ("a = 1\n}", "line 2: unexpected '}'"),
    ('a = "open', "unterminated quoted string"),
    ("a b c", "expected '=' or '{' after 'a'"),
])
def test_phil_syntax_errors_give_the_line(text, message):
    with pytest.raises(ParameterError) as error:
        parse(text, "broken.phil")
    assert "broken.phil, line" in str(error.value) and message in str(error.value)


def test_help_strings_join_continuation_lines():
    tree = parse('x = 1\n  .type = int\n  .help = "one "\n    "two"\n  .expert_level = 2\n', "t")
    definition = next(tree.definitions())
    assert definition.help == "one two" and definition.expert_level == 2
    assert convert(definition, "None") is None


def test_choice_without_default_is_none():
    params = ParameterSet.from_text("c = a b c\n .type = choice\n", "t")
    assert params.extract().c is None
    params.assign("c", "b")
    assert params.extract().c == "b"
