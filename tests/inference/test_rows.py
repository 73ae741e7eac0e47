"""The row declaration (inference.rows.Row): its JSON shape, reading it back, and the surfaces derived from it."""

from __future__ import annotations

import pytest

from inference.rows import ABSENT, NLA_EXTRA, NLA_METRIC, Row, fields_in


def lens_row(**changes) -> Row:
    return Row(position=3, token="cat", explanation="an animal", mse=1.5, kl=None, **changes)


def test_a_lens_row_has_every_common_field_and_no_family_or_import_field():
    data = lens_row().to_dict()
    assert data["kl"] is None and "kl" in data  # not computed: null, present
    assert not set(data) & {*fields_in(NLA_METRIC), *fields_in(NLA_EXTRA), "imported_fields"}


def test_an_optional_field_set_to_none_is_kept():
    """An NLA without a variance constant has fve_nrm null: present, unlike a Consistency Lens' absent one."""
    row = lens_row(mse_nrm=0.2, fve_nrm=None)
    assert row.to_dict()["fve_nrm"] is None and "fve_nrm" in row and "av_text" not in row


def test_read_by_key_like_the_stored_json():
    row = lens_row(mse_nrm=0.2)
    assert row["mse"] == 1.5 and row.get("av_text", "none") == "none" and set(row) == set(row.to_dict())
    with pytest.raises(KeyError):
        row["av_text"]
    with pytest.raises(KeyError):
        row["not a field"]


def test_from_dict_reads_a_stored_row_back_and_an_old_one_with_fields_missing():
    row = lens_row(mse_nrm=0.2, imported_fields={"extra": 1})
    assert Row.from_dict(row.to_dict()) == row
    old = Row.from_dict({"position": 0, "token": "a", "explanation": "b", "mse": 2.0, "unknown": 1})
    assert old.cosine_similarity is None and old.mse_nrm is ABSENT and "unknown" not in old
