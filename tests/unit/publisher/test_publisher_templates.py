import pytest

from publisher.templates import compile_template, interpret
from stacdrop.errors import ConfigError, InvalidItem


def test_plain_fields_and_literals():
    t = compile_template("CHELSA_{variable}_{month}_{year}.tif")
    assert t.match("CHELSA_tas_06_2010.tif") == {"variable": "tas", "month": "06", "year": "2010"}
    assert t.match("CHELSA_tas_06_2010.tiff") is None
    assert t.match("other.tif") is None


def test_regex_metacharacters_are_literal():
    t = compile_template("a.b_{x}.tif")
    assert t.match("a.b_1.tif") == {"x": "1"}
    assert t.match("aXb_1.tif") is None


def test_custom_patterns_with_nested_braces():
    t = compile_template(r"tas_{year:\d{4}}{month:\d{2}}.tif")
    assert t.match("tas_201006.tif") == {"year": "2010", "month": "06"}
    assert t.match("tas_20106.tif") is None


def test_default_field_is_non_greedy_and_stays_in_segment():
    t = compile_template("{variable}_{rest}.tif")
    assert t.match("bio_1_x.tif") == {"variable": "bio", "rest": "1_x"}
    t2 = compile_template("{a}/{b}.tif")
    assert t2.match("x/y/z.tif") is None
    assert t2.match("x/z.tif") == {"a": "x", "b": "z"}


def test_wildcard_matches_within_a_segment():
    t = compile_template("CHELSA_*_{year}.tif")
    assert t.match("CHELSA_whatever_v2_2010.tif") == {"year": "2010"}
    assert compile_template("{model}/*/{id}.tif").match("m/a/b/x.tif") is None


def test_template_without_slash_matches_file_name_in_subfolders():
    t = compile_template("{variable}_{year}.tif")
    assert t.match("sub/dir/tas_2010.tif") == {"variable": "tas", "year": "2010"}


def test_template_with_slash_matches_whole_path():
    t = compile_template("{model}/{variable}_{year}.tif")
    assert t.match("MPI/tas_2010.tif") == {"model": "MPI", "variable": "tas", "year": "2010"}
    assert t.match("tas_2010.tif") is None


def test_repeated_field_must_be_equal():
    t = compile_template("{year}/tas_{year}.tif")
    assert t.match("2010/tas_2010.tif") == {"year": "2010"}
    assert t.match("2010/tas_2011.tif") is None


def test_literal_braces():
    assert compile_template("x{{{id}}}.tif").match("x{abc}.tif") == {"id": "abc"}


@pytest.mark.parametrize(
    "template",
    ["{year", "year}.tif", "{}.tif", "{9x}.tif", "{x:(}.tif", "{x:}.tif", "{a-b}.tif", "", "{start_datetime}.tif"],
)
def test_malformed_templates(template):
    with pytest.raises(ConfigError) as exc:
        compile_template(template)
    assert "key_template" in str(exc.value)


def test_interpret_year_month_day():
    f = interpret({"variable": "tas", "year": "2010", "month": "06"}, "c/x.tif")
    assert f.datetime == "2010-06-01T00:00:00Z"
    assert f.properties == {"variable": "tas", "year": 2010, "month": 6}
    assert f.id is None


def test_interpret_keeps_other_fields_as_strings():
    f = interpret({"depth": "05", "year": "1992"}, "x")
    assert f.properties == {"depth": "05", "year": 1992}


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"date": "20100615"}, "2010-06-15T00:00:00Z"),
        ({"date": "2010-06-15"}, "2010-06-15T00:00:00Z"),
        ({"datetime": "2010-06-15T12:30:00Z"}, "2010-06-15T12:30:00Z"),
        ({"datetime": "20100615T123000"}, "2010-06-15T12:30:00Z"),
        ({"datetime": "2010"}, "2010-01-01T00:00:00Z"),
        ({"date": "2010-06-15", "year": "1999"}, "2010-06-15T00:00:00Z"),
    ],
)
def test_interpret_dates(values, expected):
    assert interpret(values, "x").datetime == expected


def test_interpret_id_and_period():
    f = interpret({"id": "bio1", "start_datetime": "1981", "end_datetime": "2010-12-31"}, "x")
    assert f.id == "bio1" and f.datetime is None
    assert (f.start_datetime, f.end_datetime) == ("1981-01-01T00:00:00Z", "2010-12-31T00:00:00Z")
    assert f.properties == {}


@pytest.mark.parametrize(
    "values", [{"year": "2010", "month": "13"}, {"year": "abcd"}, {"date": "2010-02-30"}, {"date": "June"},
               {"year": "2010", "month": "02", "day": "30"}],
)
def test_interpret_bad_dates_name_the_file(values):
    with pytest.raises(InvalidItem) as exc:
        interpret(values, "col/bad_file.tif")
    assert "col/bad_file.tif" in str(exc.value)
