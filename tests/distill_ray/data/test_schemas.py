"""The stage row schemas: every column documented, derived schemas keep the input and replace what they add."""

from __future__ import annotations

import pyarrow as pa
import pytest

from distill_ray.data import schemas

DECLARED = [schemas.PROBLEM, schemas.COLLECTED_PROBLEM, schemas.SAMPLE, schemas.SYNTHESIZED, schemas.GROUP,
            schemas.PAIR, schemas.logits("float16"), schemas.logits("float32")]  # fmt: skip


@pytest.mark.parametrize("schema", DECLARED, ids=lambda s: ",".join(s.names[:3]))
def test_every_column_has_one_documented_meaning(schema):
    assert len(set(schema.names)) == len(schema.names)
    assert set(schema.names) <= set(schemas.COLUMNS)


def test_an_undocumented_column_is_refused():
    with pytest.raises(ValueError, match="undocumented column"):
        schemas._schema(("mystery", pa.string()))


def test_derived_schemas_keep_the_input_and_replace_what_they_add():
    base = pa.schema([("id", pa.string()), ("rv", pa.string()), ("response", pa.large_string())])
    judged = schemas.judged(base, ["rv", "difficulty"])
    assert judged.names == ["id", "response", "rv", "difficulty"]
    assert judged.field("rv").type == pa.int64()  # an earlier judgement of the same name is replaced
    rewritten = schemas.rewritten(schemas.SAMPLE)
    assert rewritten.field("response").type == pa.string() and rewritten.names[-2:] == ["original_response",
                                                                                          "rewritten"]  # fmt: skip
    assert schemas.selected(schemas.selected(base)).names == ["id", "rv", "response", "fallback"]
    assert schemas.columns_of(schemas.PAIR, ["problem", "beta"]) == pa.schema([("problem", pa.string()),
                                                                                ("beta", pa.float64())])  # fmt: skip
